"""Alert rules: `promtool check rules`, `promtool test rules` (each alert fires when it should, not
before its `for`, and stays silent on healthy input), and every alert documented and linked to a
section of the runbook that exists.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.tools import run, tool
from tests.gateway_process import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_rules_check() -> None:
    out = run([tool("promtool"), "check", "rules", str(RULES)])
    assert "SUCCESS" in out.stdout, out.stdout


def test_rules_unit_tests() -> None:
    out = run([tool("promtool"), "test", "rules", str(RULE_TESTS)], cwd=RULE_TESTS.parent)
    assert "SUCCESS" in out.stdout, out.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fired == set(), f"alerts never shown firing: {sorted(names - fired)}"
    assert names - silent == set(), f"alerts never shown silent: {sorted(names - silent)}"


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for alert in _alerts():
        ann = alert.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{alert['alert']}: summary/description missing"
        assert alert.get("labels", {}).get("severity") in {"page", "ticket"}, alert["alert"]
        url = ann.get("runbook_url", "")
        name = alert["alert"]
        assert url.startswith("https://telemetry-gateway.example/docs/runbook.md#"), f"{name}: {url}"
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{name}: no section #{anchor} in {RUNBOOK}"
