"""``stack/ports.env`` (what the stack binds) and ``tests/stackenv.py`` (where tests look) must
agree on every endpoint default, or tests fail against a healthy stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ["TG_STACK_CACHE", "TG_STACK_KAFKA", "TG_STACK_KAFKA_CLUSTER", "TG_STACK_ES",
         "TG_STACK_JAEGER_OTLP_GRPC", "TG_STACK_JAEGER_OTLP_HTTP", "TG_STACK_JAEGER_QUERY",
         "TG_STACK_PROMETHEUS", "TG_STACK_JAEGER_BIN", "TG_STACK_TELEMETRYGEN_BIN"]
ATTRS = ["STACK_CACHE", "KAFKA_BOOTSTRAP", "KAFKA_CLUSTER_BOOTSTRAP", "ES_URL", "JAEGER_OTLP_GRPC",
         "JAEGER_OTLP_HTTP", "JAEGER_QUERY_URL", "PROMETHEUS_URL", "JAEGER_BIN", "TELEMETRYGEN_BIN"]


def _clean_env() -> dict[str, str]:
    return {"HOME": os.environ.get("HOME", "/"), "PATH": os.environ.get("PATH", "")}


def test_ports_env_defaults_match_stackenv() -> None:
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . stack/ports.env; for n in {" ".join(NAMES)}; do echo "${{!n}}"; done'],
        cwd=REPO, env=_clean_env(), capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    code = ("import json; from tests import stackenv as s; "
            f"print(json.dumps([str(getattr(s, a)) for a in {ATTRS!r}]))")
    python = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(),
                                       capture_output=True, text=True, check=True).stdout)
    assert dict(zip(NAMES, shell, strict=True)) == dict(zip(NAMES, python, strict=True))


def test_no_stack_port_is_one_the_gateway_uses() -> None:
    out = subprocess.run(["bash", "-c", "set -a; . stack/ports.env; env"], cwd=REPO, env=_clean_env(),
                         capture_output=True, text=True, check=True).stdout
    ports = {line.split("=", 1)[1] for line in out.splitlines()
             if line.startswith("TG_STACK_") and line.split("=", 1)[0].endswith("_PORT")}
    assert ports, out
    assert not ports & {"4317", "4318", "8888", "8889"}


def test_kafka_format_takes_a_cluster_id_that_starts_with_a_dash() -> None:
    """One id in 64 starts with "-": as a separate word Kafka's argparse takes it for an option."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "stack"))
    from stackctl.kafka import format_argv

    argv = format_argv(Path("/k"), Path("/k/log4j2.properties"), "-_C7uev5TOSA102e50dhLw", Path("/k/p"))
    assert "--cluster-id=-_C7uev5TOSA102e50dhLw" in argv
