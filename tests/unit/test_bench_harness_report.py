"""Targets evaluation, Gateway/Collector ratios and the report files, on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import markdown, ratios, write_all
from bench.results import RoundResult, aggregate, scenario_name
from bench.targets import TARGETS_PATH, TargetsError, evaluate, gaps_to_collector, load_targets, parse_targets


def result(system: str = "gateway", workers: int = 1, **kw: Any) -> RoundResult:
    base: dict[str, Any] = dict(
        scenario=scenario_name(signal="traces", transport="grpc", bus="kafka", mode="closed",
                               workers=workers),
        system=system, workers=workers, signal="traces", transport="grpc", bus="kafka", mode="closed",
        offered_items_per_s=0.0, duration_s=10.0, items_per_s=20_000.0, bytes_per_s=9e6,
        latency_ms={"p50": 10.0, "p90": 20.0, "p99": 40.0, "p99.9": 60.0}, cpu_s=10.0,
        peak_rss_mib=100.0, hwm_mib=110.0, sent_items=220_000, acked_items=220_000,
        delivered_items=220_000)
    base.update(kw)
    return RoundResult(**base)


def test_scenario_names() -> None:
    assert scenario_name(signal="traces", transport="grpc", bus="kafka", mode="closed", workers=2) == \
        "traces-grpc-kafka-closed-w2"
    name = scenario_name(signal="logs", transport="http", bus="memory", mode="open", workers=1, load_pct=50)
    assert name == "logs-http-memory-open50-w1"


def test_items_per_cpu_second_and_loss() -> None:
    r = result(items_per_s=20_000.0, duration_s=10.0, cpu_s=8.0)
    assert r.items_per_cpu_s == 25_000.0
    assert r.loss_ok
    assert not result(delivered_items=219_999).loss_ok
    assert result(delivered_items=220_512).loss_ok  # a retried batch duplicated is not loss


def test_targets_met_and_missed_are_named() -> None:
    targets = parse_targets({"version": 1, "scenarios": {"traces-grpc-kafka-closed-w1": {
        "min_items_per_s": 15_000, "max_p99_ms": 30, "max_rss_mib": 200}}})
    verdicts = evaluate(targets, [result(), result("collector")])
    checks = [(v.check, v.ok) for v in verdicts]
    assert checks == [("items/s", True), ("p99 ms", False), ("peak RSS MiB", True)]
    missed = [v.describe() for v in verdicts if not v.ok]
    assert missed == ["traces-grpc-kafka-closed-w1: p99 ms = 40.0 MISSES bound 30.0"]


def test_collector_rounds_are_never_judged() -> None:
    targets = parse_targets({"version": 1, "scenarios": {
        "traces-grpc-kafka-closed-w1": {"min_items_per_s": 1e9}}})
    assert evaluate(targets, [result("collector")]) == []


@pytest.mark.parametrize("doc", [
    {"version": 2, "scenarios": {}},
    {"version": 1, "scenarios": {"x": {"min_items_per_sec": 1}}},
    {"version": 1, "scenarios": {"x": {"max_p99_ms": "fast"}}},
    {"version": 1, "scenarios": ["x"]},
])
def test_malformed_targets_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(TargetsError):
        parse_targets(doc)


def test_the_shipped_targets_file_parses() -> None:
    targets = load_targets(TARGETS_PATH)
    assert all(name.startswith(("traces-", "logs-", "metrics-", "*-")) for name in targets.scenarios)
    assert {(r.peer, r.metric) for r in targets.ratios} == {
        ("collector", "items_per_cpu_s"), ("collector-durable", "p99_ms"), ("collector", "peak_rss_mib"),
        ("kafka-path", "delivered_items_per_s")}


def test_ratios_average_alternating_collector_rounds() -> None:
    rs = ratios([result(items_per_s=30_000.0, cpu_s=10.0),
                 result("collector", items_per_s=10_000.0, cpu_s=5.0),
                 result("collector", items_per_s=30_000.0, cpu_s=15.0)])
    assert len(rs) == 1
    vs = rs[0]["peers"]["collector"]
    assert vs["rounds"] == 2
    assert vs["items_per_s"] == pytest.approx(1.5)
    assert vs["items_per_cpu_s"] == pytest.approx(30_000 / 20_000)


def test_gaps_to_collector_put_targets_next_to_its_figures() -> None:
    targets = parse_targets({"version": 1, "scenarios": {
        "traces-grpc-kafka-closed-w1": {"min_items_per_s": 10_000}}})
    gaps = gaps_to_collector(targets, [result(), result("collector", items_per_s=40_000.0)])
    assert gaps == ["traces-grpc-kafka-closed-w1: min 10,000 items/s = 0.25x the Collector's 40,000"]


def test_report_files_are_written(tmp_path: Path) -> None:
    results = [
        result(), result("collector"), result(workers=2, scenario="traces-grpc-kafka-closed-w2"),
        result(mode="open", offered_items_per_s=5000.0, scenario="traces-grpc-kafka-open25-w1"),
        result("collector", mode="open", offered_items_per_s=5000.0, scenario="traces-grpc-kafka-open25-w1"),
        result(mode="open", offered_items_per_s=10000.0, scenario="traces-grpc-kafka-open50-w1"),
        result("collector", mode="open", offered_items_per_s=10000.0, scenario="traces-grpc-kafka-open50-w1"),
    ]
    paths = write_all(tmp_path, results, [], {"started": "now", "cpus": 2})
    doc = json.loads(paths["json"].read_text())
    assert len(doc["rounds"]) == 7
    assert doc["loss_check_ok"] is True
    assert len(doc["ratios"]) == 4  # closed w1 and w2 (against the same Collector rounds), open25, open50
    assert paths["png"].stat().st_size > 10_000
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    assert "| traces-grpc-kafka-closed-w1 | gateway | 1 | max | 20,000 |" in md


def test_markdown_marks_a_loss() -> None:
    md = markdown([result(delivered_items=200_000)], [], {})
    assert "LOST 20,000" in md


def test_repeated_rounds_aggregate_to_medians_and_sums() -> None:
    rounds = [result(items_per_s=v, acked_items=100, delivered_items=100, errors={"grpc UNAVAILABLE": 1})
              for v in (50_000.0, 90_000.0, 70_000.0)] + [result("collector")]
    summary = aggregate(rounds)
    assert [(r.system, r.items_per_s) for r in summary] == [("gateway", 70_000.0), ("collector", 20_000.0)]
    gw = summary[0]
    assert (gw.acked_items, gw.delivered_items, gw.errors) == (300, 300, {"grpc UNAVAILABLE": 3})
    assert gw.notes == ["median of 3 rounds"]


def test_report_of_repeated_rounds_lists_medians_then_every_round(tmp_path: Path) -> None:
    rounds = [result(items_per_s=50_000.0), result(items_per_s=70_000.0)]
    paths = write_all(tmp_path, aggregate(rounds), [], {}, rounds=rounds)
    doc = json.loads(paths["json"].read_text())
    assert [r["items_per_s"] for r in doc["summary"]] == [60_000.0]
    assert len(doc["rounds"]) == 2
    md = paths["markdown"].read_text()
    assert "## Results (medians of repeated rounds)" in md and "## Every round, in the order run" in md
