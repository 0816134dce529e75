"""Where the real services from ``stack/`` listen, for tests. One place; overridable by env.

The defaults match ``stack/ports.env``. A test that needs a service calls ``require(...)``:
a service that is not there fails the test with the command that starts it; it never skips.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

STACK_CACHE = Path(
    os.environ.get("TG_STACK_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "telemetry-gateway" / "stack"
)

KAFKA_BOOTSTRAP = os.environ.get("TG_STACK_KAFKA", "127.0.0.1:9092")
ES_URL = os.environ.get("TG_STACK_ES", "http://127.0.0.1:9200")
JAEGER_OTLP_GRPC = os.environ.get("TG_STACK_JAEGER_OTLP_GRPC", "127.0.0.1:14317")
JAEGER_OTLP_HTTP = os.environ.get("TG_STACK_JAEGER_OTLP_HTTP", "127.0.0.1:14318")
JAEGER_QUERY_URL = os.environ.get("TG_STACK_JAEGER_QUERY", "http://127.0.0.1:16686")
PROMETHEUS_URL = os.environ.get("TG_STACK_PROMETHEUS", "http://127.0.0.1:9090")
JAEGER_BIN = Path(os.environ.get("TG_STACK_JAEGER_BIN") or STACK_CACHE / "bin" / "jaeger")
TELEMETRYGEN_BIN = Path(os.environ.get("TG_STACK_TELEMETRYGEN_BIN") or STACK_CACHE / "bin" / "telemetrygen")

_ADDRS = {
    "kafka": KAFKA_BOOTSTRAP.split(",")[0],
    "elasticsearch": ES_URL.split("//", 1)[-1],
    "jaeger": JAEGER_OTLP_GRPC,
    "jaeger-query": JAEGER_QUERY_URL.split("//", 1)[-1],
    "prometheus": PROMETHEUS_URL.split("//", 1)[-1],
}


def _listening(addr: str) -> bool:
    host, _, port = addr.rstrip("/").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def require(*services: str) -> None:
    """Fail (never skip) when a stack service is not listening."""
    missing = [s for s in services if not _listening(_ADDRS[s])]
    if missing:
        pytest.fail(
            f"stack service(s) not running: {', '.join(missing)} "
            f"({', '.join(_ADDRS[m] for m in missing)}); start them with `bash stack/up`",
            pytrace=False,
        )


def require_binary(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path.name} is not built at {path}; run `bash stack/up`", pytrace=False)
    return path
