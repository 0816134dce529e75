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
# The replicated layout, up only after `bash stack/up --kafka-brokers 3` (fault tests).
KAFKA_CLUSTER_BOOTSTRAP = os.environ.get(
    "TG_STACK_KAFKA_CLUSTER", "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
)
ES_URL = os.environ.get("TG_STACK_ES", "http://127.0.0.1:9200")
JAEGER_OTLP_GRPC = os.environ.get("TG_STACK_JAEGER_OTLP_GRPC", "127.0.0.1:14317")
JAEGER_OTLP_HTTP = os.environ.get("TG_STACK_JAEGER_OTLP_HTTP", "127.0.0.1:14318")
JAEGER_QUERY_URL = os.environ.get("TG_STACK_JAEGER_QUERY", "http://127.0.0.1:16686")
PROMETHEUS_URL = os.environ.get("TG_STACK_PROMETHEUS", "http://127.0.0.1:9090")
VICTORIALOGS_URL = os.environ.get("TG_STACK_VICTORIALOGS", "http://127.0.0.1:9428")
JAEGER_BIN = Path(os.environ.get("TG_STACK_JAEGER_BIN") or STACK_CACHE / "bin" / "jaeger")
TELEMETRYGEN_BIN = Path(os.environ.get("TG_STACK_TELEMETRYGEN_BIN") or STACK_CACHE / "bin" / "telemetrygen")

_ADDRS = {
    "kafka": KAFKA_BOOTSTRAP.split(",")[0],
    "kafka-cluster": KAFKA_CLUSTER_BOOTSTRAP,
    "elasticsearch": ES_URL.split("//", 1)[-1],
    "jaeger": JAEGER_OTLP_GRPC,
    "jaeger-query": JAEGER_QUERY_URL.split("//", 1)[-1],
    "prometheus": PROMETHEUS_URL.split("//", 1)[-1],
    "victorialogs": VICTORIALOGS_URL.split("//", 1)[-1],
}
# Services a bare `bash stack/up` does not start when the stack was set up before they existed.
_HOW = {"kafka-cluster": "bash stack/up --kafka-brokers 3", "victorialogs": "bash stack/up victorialogs"}


def _listening(addrs: str) -> bool:
    """Every ``host:port`` in the comma-separated ``addrs`` accepts a connection."""
    for addr in addrs.split(","):
        host, _, port = addr.rstrip("/").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                pass
        except OSError:
            return False
    return True


def require(*services: str) -> None:
    """Fail (never skip) when a stack service is not listening.

    Services: kafka, kafka-cluster (the three-broker layout), elasticsearch, jaeger,
    jaeger-query, prometheus, victorialogs.
    """
    missing = [s for s in services if not _listening(_ADDRS[s])]
    if missing:
        how = next((_HOW[m] for m in missing if m in _HOW), "bash stack/up")
        pytest.fail(
            f"stack service(s) not running: {', '.join(missing)} "
            f"({'; '.join(_ADDRS[m] for m in missing)}); start them with `{how}`",
            pytrace=False,
        )


def require_binary(path: Path) -> Path:
    """The built tool at ``path`` (JAEGER_BIN, TELEMETRYGEN_BIN), or a failed test saying how."""
    if not path.is_file():
        pytest.fail(f"{path.name} is not built at {path}; run `bash stack/up`", pytrace=False)
    return path
