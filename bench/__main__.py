"""``python -m bench ...`` is ``telemetry-gateway bench ...``."""

from __future__ import annotations

import sys

from gateway.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
