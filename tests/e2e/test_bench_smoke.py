"""The bench end to end, bounded: a few seconds of load on loopback, then the report and loss check.

These run the shipped command (``python -m bench``) as a user would, against a real gateway
subprocess: once on the memory bus (delivery counted in the file sink), once through the real
Kafka from ``stack/`` (delivery counted by reading the round's topics back), and once against
the Collector peer so the side-by-side path stays working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.stackenv import JAEGER_BIN, KAFKA_BOOTSTRAP, require, require_binary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--warmup", "1", "--duration", "3", "--concurrency", "4", "--no-targets", "--quiet"]


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench", *args, *SHORT, "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    out = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, f"bench exited {proc.returncode}\n{out}"
    reports = list(tmp_path.glob("*/report.json"))
    assert len(reports) == 1, f"expected one report under {tmp_path}, found {reports}"
    outdir = reports[0].parent
    assert (outdir / "report.md").read_text().startswith("# Benchmark")
    assert (outdir / "plot.png").read_bytes()[:4] == b"\x89PNG"
    doc: dict[str, Any] = json.loads(reports[0].read_text())
    return doc


def assert_delivered(doc: dict[str, Any]) -> dict[str, Any]:
    """The one round's figures, after checking its loss check was exact and nothing failed."""
    assert doc["loss_check_ok"] is True
    (r,) = doc["rounds"]
    assert isinstance(r, dict)
    assert r["acked_items"] > 0, r
    assert r["errors"] == {}, r
    assert r["delivered_items"] == r["acked_items"], r  # exactly: no loss and, here, no retries
    assert r["items_per_s"] > 0 and r["latency_ms"]["p99"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mib"] > 0
    return r


def test_bench_against_the_gateway_on_the_memory_bus(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "run", "--bus", "memory", "--transport", "http")
    r = assert_delivered(doc)
    assert r["scenario"] == "traces-http-memory-closed-w1"


def test_bench_against_the_gateway_through_kafka(tmp_path: Path) -> None:
    require("kafka")
    doc = run_bench(tmp_path, "run", "--bus", "kafka", "--bootstrap", KAFKA_BOOTSTRAP)
    r = assert_delivered(doc)
    assert r["scenario"] == "traces-grpc-kafka-closed-w1"


def test_bench_against_the_collector_peer_through_kafka(tmp_path: Path) -> None:
    require("kafka")
    binary = require_binary(JAEGER_BIN)
    doc = run_bench(tmp_path, "run", "--system", "collector", "--jaeger-bin", str(binary),
                    "--bootstrap", KAFKA_BOOTSTRAP, "--mode", "open", "--rate", "5000")
    r = assert_delivered(doc)
    assert r["system"] == "collector" and r["offered_items_per_s"] == 5000
