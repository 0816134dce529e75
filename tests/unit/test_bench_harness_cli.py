"""The bench command's verdict: exit 1 naming the missed target or the lost items, 0 otherwise."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from bench.command import add_arguments, finish_run
from bench.loadgen import LoadSpec
from bench.runner import Environment
from bench.targets import parse_targets
from tests.unit.test_bench_harness_report import result

TARGETS = parse_targets({"version": 1, "scenarios": {"traces-grpc-kafka-closed-w1": {
    "min_items_per_s": 10_000, "max_p99_ms": 100}}})


def finish(tmp_path: Path, *results_kw: dict[str, Any]) -> int:
    ns = argparse.Namespace(bench_command="run")
    env = Environment(outdir=tmp_path / "out", run_id="t")
    rs = [result(**kw) for kw in results_kw]
    return finish_run(ns, env, dt.datetime.now(dt.UTC), rs, TARGETS, LoadSpec("", ""))


def test_met_targets_and_no_loss_exit_zero(tmp_path: Path) -> None:
    assert finish(tmp_path, {}) == 0
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [t["ok"] for t in doc["targets"]] == [True, True]
    assert doc["meta"]["collector_config"] == "bench/collector-otlp-kafka.yaml"


def test_a_missed_target_exits_one_and_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert finish(tmp_path, {"items_per_s": 5_000.0}) == 1
    err = capsys.readouterr().err
    assert "TARGET MISSED: traces-grpc-kafka-closed-w1: items/s = 5,000.0 MISSES bound 10,000.0" in err


def test_lost_items_exit_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert finish(tmp_path, {"delivered_items": 1000}) == 1
    assert "LOSS CHECK FAILED" in capsys.readouterr().err


def test_subcommands_parse() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["compare", "--workers", "1,2", "--loads", "25,50", "--gateway-env", "TG_X=1"])
    assert (ns.bench_command, ns.workers, ns.loads, ns.gateway_env) == ("compare", "1,2", "25,50", ["TG_X=1"])
    assert (ns.scenarios, ns.collectors, ns.signal, ns.transport) == (
        "traces/grpc,traces/http,logs/grpc,metrics/grpc", "default,durable", None, None)
    assert (ns.warmup, ns.duration) == (1.5, 5.0)  # shorter windows than `run`: the matrix stays bounded
    assert parser.parse_args(["run"]).duration == 8.0
    assert parser.parse_args(["run", "--system", "collector-durable"]).system == "collector-durable"
    ns = parser.parse_args(["micro", "--", "-q"])
    assert ns.pytest_args == ["--", "-q"]
