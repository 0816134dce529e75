"""Targets as ratios to a peer of the same run, the one-table ratio report and the compare matrix."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from bench.command import finish_run, parse_scenario
from bench.loadgen import LoadSpec
from bench.report import markdown, ratio_table, ratios, write_all
from bench.results import RoundResult, scenario_name
from bench.runner import Environment, compare_plan, open_plan
from bench.targets import TargetsError, evaluate, parse_targets
from otlp.signals import Signal
from tests.unit.test_bench_harness_report import result


def at(system: str, pct: int | None, *, bus: str = "kafka", signal: str = "traces", **kw: Any) -> RoundResult:
    """A round of ``system`` at ``pct`` % of the gateway's max (None: closed loop, saturation)."""
    mode = "closed" if pct is None else "open"
    name = scenario_name(signal=signal, transport="grpc", bus=bus, mode=mode, workers=1, load_pct=pct)
    return result(system, scenario=name,
                  signal=signal, bus=bus, mode=mode, load_pct=pct,
                  offered_items_per_s=0.0 if pct is None else 1000.0 * pct, **kw)


def targets(*ratio_entries: dict[str, Any], scenarios: dict[str, Any] | None = None) -> Any:
    return parse_targets({"version": 1, "scenarios": scenarios or {}, "ratios": list(ratio_entries)})


def test_items_per_cpu_second_ratio_to_the_collector_is_judged_per_signal() -> None:
    t = targets({"scenarios": "*-kafka-closed-w1", "peer": "collector", "metric": "items_per_cpu_s",
                 "min": 1.5})
    rounds = [at("gateway", None, cpu_s=5.0), at("collector", None, cpu_s=10.0),  # 40k vs 20k per CPU-s
              at("gateway", None, signal="logs", cpu_s=8.0), at("collector", None, signal="logs", cpu_s=10.0)]
    verdicts = evaluate(t, rounds)
    assert [(v.scenario, v.ok) for v in verdicts] == [("traces-grpc-kafka-closed-w1", True),
                                                      ("logs-grpc-kafka-closed-w1", False)]
    assert verdicts[1].measured == pytest.approx(1.25)
    assert verdicts[1].describe() == ("logs-grpc-kafka-closed-w1: items/CPU-s vs collector = 1.25x MISSES "
                                      "bound 1.50x (gateway 25,000, collector 20,000)")


def test_p99_is_compared_with_the_durable_collector_at_the_same_share_of_load() -> None:
    t = targets({"scenarios": "*-kafka-open*-w1", "peer": "collector-durable", "metric": "p99_ms",
                 "max": 1.0})
    p99 = {"p50": 1.0, "p99": 15.0}
    rounds = [at("gateway", 10, latency_ms=p99), at("collector-durable", 10, latency_ms={"p99": 30.0}),
              at("collector", 10, latency_ms={"p99": 1.0}),  # the other Collector is not this target's peer
              at("gateway", 50, latency_ms=p99), at("collector-durable", 50, latency_ms={"p99": 12.0}),
              at("gateway", None), at("collector-durable", None)]  # saturation: not an open-loop load
    verdicts = evaluate(t, rounds)
    assert [(v.scenario, round(v.measured, 2), v.ok) for v in verdicts] == [
        ("traces-grpc-kafka-open10-w1", 0.5, True), ("traces-grpc-kafka-open50-w1", 1.25, False)]
    assert "gateway 15.0 ms, collector-durable 12.0 ms" in verdicts[1].describe()


def test_embedded_default_is_judged_against_the_kafka_path_of_the_same_run() -> None:
    t = targets({"scenarios": "*-memory-closed-w1", "peer": "kafka-path", "metric": "delivered_items_per_s",
                 "min": 0.5},
                scenarios={"*-memory-closed-w1": {"max_rss_mib": 150}})
    kafka = at("gateway", None, items_per_s=100_000.0, warmup_s=2.0, duration_s=8.0, acked_items=1_000_000,
               delivered_items=1_000_000)
    # acknowledged faster than the Kafka path (queued), but the file sink wrote the last item 30 s later
    embedded = at("gateway", None, bus="memory", items_per_s=150_000.0, peak_rss_mib=160.0, warmup_s=2.0,
                  duration_s=8.0, acked_items=1_500_000, delivered_items=1_500_000, sink_drain_s=30.0)
    verdicts = evaluate(t, [kafka, at("collector", None, items_per_s=10.0), embedded])
    assert [(v.check, v.ok) for v in verdicts] == [("peak RSS MiB", False),
                                                   ("delivered items/s vs kafka-path", False)]
    assert embedded.delivered_items_per_s == pytest.approx(37_500.0)
    assert verdicts[1].measured == pytest.approx(0.375)


def test_a_pattern_scenario_bounds_every_signal_with_p50_and_p99() -> None:
    t = targets(scenarios={"*-kafka-open25-w1": {"max_p50_ms": 5, "max_p99_ms": 20}})
    rounds = [at("gateway", 25, signal=s, latency_ms={"p50": p50, "p99": 10.0})
              for s, p50 in (("traces", 4.0), ("metrics", 6.0))]
    verdicts = evaluate(t, [*rounds, at("gateway", 10, latency_ms={"p50": 99.0, "p99": 99.0})])
    assert [(v.scenario, v.check, v.ok) for v in verdicts] == [
        ("traces-grpc-kafka-open25-w1", "p50 ms", True), ("traces-grpc-kafka-open25-w1", "p99 ms", True),
        ("metrics-grpc-kafka-open25-w1", "p50 ms", False), ("metrics-grpc-kafka-open25-w1", "p99 ms", True)]


def test_a_ratio_whose_peer_was_not_run_is_not_judged() -> None:
    t = targets({"scenarios": "*", "peer": "collector", "metric": "peak_rss_mib", "max": 0.6})
    assert evaluate(t, [at("gateway", None), at("collector-durable", None)]) == []


@pytest.mark.parametrize("entry", [
    {"scenarios": "*", "peer": "jaeger", "metric": "p99_ms", "max": 1},
    {"scenarios": "*", "peer": "collector", "metric": "p95_ms", "max": 1},
    {"scenarios": "*", "peer": "collector", "metric": "p99_ms"},
    {"scenarios": "*", "peer": "collector", "metric": "p99_ms", "max": "low"},
    {"peer": "collector", "metric": "p99_ms", "max": 1},
    {"scenarios": "*", "peer": "collector", "metric": "p99_ms", "max": 1, "note": "x"},
])
def test_malformed_ratio_targets_are_refused(entry: dict[str, Any]) -> None:
    with pytest.raises(TargetsError):
        targets(entry)


def test_one_ratio_table_row_per_scenario_against_both_collectors_and_the_kafka_path() -> None:
    rounds = [at("gateway", None, items_per_s=30_000.0, latency_ms={"p50": 2.0, "p99": 10.0}),
              at("collector", None, items_per_s=20_000.0, latency_ms={"p50": 4.0, "p99": 20.0}),
              at("collector-durable", None, items_per_s=10_000.0, latency_ms={"p50": 1.0, "p99": 5.0}),
              at("gateway", 25), at("collector", 25),  # no durable round at this load
              # the embedded default: acknowledged 15k/s over 10 s, its sink wrote the last item 10 s later
              at("gateway", None, bus="memory", items_per_s=15_000.0, peak_rss_mib=50.0, acked_items=150_000,
                 delivered_items=150_000, sink_drain_s=10.0)]
    rows = ratios(rounds)
    assert [(r["scenario"], sorted(r["peers"])) for r in rows] == [
        ("traces-grpc-kafka-closed-w1", ["collector", "collector-durable"]),
        ("traces-grpc-kafka-open25-w1", ["collector"]),
        ("traces-grpc-memory-closed-w1", ["kafka-path"])]
    table = ratio_table(rows)
    assert table[0] == ("| scenario | gateway ÷ | items/s | delivered items/s | items/CPU-s | p50 | p99 | "
                        "peak RSS |")
    assert table[2] == ("| traces-grpc-kafka-closed-w1 | Collector · durable Collector | 1.50x · 3.00x | "
                        "1.00x · 1.00x | 1.50x · 3.00x | 0.50x · 2.00x | 0.50x · 2.00x | 1.00x · 1.00x |")
    assert table[3].startswith("| traces-grpc-kafka-open25-w1 | Collector · durable Collector | 1.00x · - | ")
    # delivered: 150k items over 20 s (7.5k/s) against the Kafka path's 220k over 10 s (22k/s)
    assert table[4] == ("| traces-grpc-memory-closed-w1 | Kafka path | 0.50x | 0.34x | 0.50x | 5.00x | "
                        "4.00x | 0.50x |")
    assert "\n".join(table) in markdown(rounds, [], {})


def test_a_missed_ratio_target_exits_one_and_is_in_the_report(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    t = targets({"scenarios": "*-kafka-*-w1", "peer": "collector", "metric": "peak_rss_mib", "max": 0.6})
    env = Environment(outdir=tmp_path / "out", run_id="t")
    rounds = [at("gateway", None, peak_rss_mib=90.0), at("collector", None, peak_rss_mib=100.0),
              at("collector-durable", None),
              at("gateway", 10), at("collector", 10), at("collector-durable", 10)]
    rc = finish_run(argparse.Namespace(bench_command="compare"), env, dt.datetime.now(dt.UTC), rounds, t,
                    LoadSpec("", ""))
    assert rc == 1
    missed = ("traces-grpc-kafka-closed-w1: peak RSS vs collector = 0.90x MISSES bound 0.60x "
              "(gateway 90 MiB, collector 100 MiB)")
    assert f"TARGET MISSED: {missed}" in capsys.readouterr().err
    doc = json.loads((env.outdir / "report.json").read_text())
    assert [(x["scenario"], x["check"], x["ok"]) for x in doc["targets"]] == [
        ("traces-grpc-kafka-closed-w1", "peak RSS vs collector", False),
        ("traces-grpc-kafka-open10-w1", "peak RSS vs collector", False)]
    assert doc["targets"][0]["ratio"] is True
    assert f"**MISSED**: {missed}" in (env.outdir / "report.md").read_text()
    assert (env.outdir / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_plan_alternates_systems_then_runs_the_embedded_default() -> None:
    base = LoadSpec("", "", warmup_s=1.0, duration_s=2.0)
    plans = compare_plan(base, [1, 2], repeat=1, embedded=True)
    assert [(p.system, p.workers, p.bus) for p in plans] == [
        ("gateway", 1, None), ("collector", 1, None), ("collector-durable", 1, None),
        ("gateway", 2, None), ("collector", 1, None), ("collector-durable", 1, None),
        ("gateway", 1, "memory")]
    assert all(p.load.mode == "closed" for p in plans)


def test_open_plan_offers_the_same_share_of_the_measured_max_to_every_system() -> None:
    plans = open_plan(LoadSpec("", ""), 200_000.0, [10, 25, 50], collectors=["collector-durable"])
    assert [(p.system, p.load_pct, p.load.rate, p.load.mode) for p in plans] == [
        ("gateway", 10, 20_000.0, "open"), ("collector-durable", 10, 20_000.0, "open"),
        ("gateway", 25, 50_000.0, "open"), ("collector-durable", 25, 50_000.0, "open"),
        ("gateway", 50, 100_000.0, "open"), ("collector-durable", 50, 100_000.0, "open")]


def test_scenarios_parse_and_bad_ones_are_refused() -> None:
    assert parse_scenario(" logs/http") == (Signal.LOGS, "http")
    with pytest.raises(ValueError):
        parse_scenario("traces/udp")
    with pytest.raises(ValueError):
        parse_scenario("spans/grpc")


def test_the_plot_has_a_latency_panel_per_scenario_and_every_system(tmp_path: Path) -> None:
    rounds = [at(system, pct, signal=signal, latency_ms={"p50": 1.0 + pct, "p99": 5.0 + pct})
              for signal in ("traces", "logs") for pct in (10, 25, 50)
              for system in ("gateway", "collector", "collector-durable")]
    rounds += [at("gateway", None), at("collector", None), at("gateway", None, bus="memory")]
    paths = write_all(tmp_path, rounds, [], {"generator": "g", "collector_config": "c"})
    assert paths["png"].stat().st_size > 20_000
