"""The image's HEALTHCHECK: ``/healthz`` of a gateway, ``/metrics`` of a pipelines worker.

The check cannot see the container's arguments, so it reads PID 1's command line: a
``pipelines`` worker serves only ``/metrics`` on ``pipelines.admin_port`` (8889), the gateway
``/healthz`` on ``admin.port`` (8888). Ports follow the same ``TG_*`` overrides as the process.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        args = []
    if b"pipelines" in args:
        url = f"http://127.0.0.1:{os.environ.get('TG_PIPELINES__ADMIN_PORT', '8889')}/metrics"
    else:
        url = f"http://127.0.0.1:{os.environ.get('TG_ADMIN__PORT', '8888')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
