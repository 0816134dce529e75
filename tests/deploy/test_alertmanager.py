"""Alertmanager routing: `amtool check-config`, every case of routes_test.yaml through
`amtool config routes test`, and the inhibitions shown by a real Alertmanager (free port, no
cluster listener): alerts posted to it come back inhibited by their cause.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import run, tool
from tests.gateway_process import REPO_ROOT, free_port
from tests.waiting import wait_for

CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yaml"
CASES = yaml.safe_load((REPO_ROOT / "deploy" / "alertmanager" / "routes_test.yaml").read_text())


def test_check_config() -> None:
    out = run([tool("amtool"), "check-config", str(CONFIG)])
    assert "SUCCESS" in out.stdout, out.stdout


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['labels']['alertname']}-{case['labels'].get('severity', 'none')}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_route(case: dict[str, Any]) -> None:
    labels = [f"{k}={v}" for k, v in case["labels"].items()]
    run([tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}",
         f"--verify.receivers={','.join(case['receivers'])}", *labels])


def _api(port: int, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2{path}", data=data,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else None


def test_causes_inhibit_symptoms(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "am.log").open("wb") as log:
        proc = subprocess.Popen([tool("prometheus-alertmanager"),
                                 f"--config.file={CONFIG}", f"--storage.path={tmp_path}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "am.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, within=20, what="alertmanager ready")
        gw = {"job": "telemetry-gateway"}
        alerts = [
            {"alertname": "TelemetryGatewayDown", "severity": "page", **gw},
            {"alertname": "TelemetryGatewayLatencyBudgetBurnFast", "severity": "page", **gw},
            {"alertname": "TelemetryGatewayInstanceDown", "severity": "ticket", "instance": "gw-0", **gw},
            {"alertname": "TelemetryPipelineDeadLetters", "severity": "ticket",
             "job": "telemetry-gateway-pipelines", "sink": "elasticsearch"},
        ]
        _api(port, "/alerts", [{"labels": a} for a in alerts])

        # The gateway being down silences its latency and per-instance alerts; nothing else.
        expected = {"TelemetryGatewayDown": False, "TelemetryPipelineDeadLetters": False,
                    "TelemetryGatewayLatencyBudgetBurnFast": True, "TelemetryGatewayInstanceDown": True}
        last: dict[str, bool] = {}

        def inhibited_as_expected() -> bool:
            last.clear()
            last.update({a["labels"]["alertname"]: bool(a["status"]["inhibitedBy"])
                         for a in _api(port, "/alerts")})
            return last == expected
        try:
            wait_for(inhibited_as_expected, within=15, what="the inhibitions")
        except AssertionError:
            pytest.fail(f"alert -> inhibited: expected {expected}, got {last}", pytrace=False)
    finally:
        proc.terminate()
        proc.wait(10)
