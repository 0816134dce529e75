"""``bench sinks`` end to end, bounded: tiny fills drained through every sink and Jaeger's writer.

The shipped command runs as a user would, against the real Kafka, Elasticsearch, Prometheus and
the Jaeger binary from ``stack/``: every drain must complete, the store must hold what was filled,
and the report must come out in its three forms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stackenv import JAEGER_BIN, require, require_binary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MESSAGES, ITEMS, PARTITIONS = 12, 50, 3


def test_bench_sinks_drains_every_sink_with_one_and_two_workers(tmp_path: Path) -> None:
    require("kafka", "elasticsearch", "prometheus")
    jaeger = require_binary(JAEGER_BIN)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "sinks", "--messages", str(MESSAGES), "--metrics-messages",
         str(MESSAGES), "--items", str(ITEMS), "--partitions", str(PARTITIONS), "--workers", "1,2",
         "--timeout", "90", "--jaeger-bin", str(jaeger), "--quiet", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    out = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, f"bench sinks exited {proc.returncode}\n{out}"
    (outdir,) = tmp_path.glob("*-sinks")
    assert (outdir / "sinks.md").read_text().startswith("# bench sinks")
    assert (outdir / "sinks.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((outdir / "sinks.json").read_text())["results"]
    assert [r["scenario"] for r in results] == ["es-spans-w1", "es-spans-w2", "jaeger-es-w1", "es-logs-w1",
                                                "es-logs-w2", "prometheus-w1", "prometheus-w2"]
    for r in results:
        assert r["complete"] and r["items"] == MESSAGES * ITEMS, r
        # A fill this small may be written before the last worker is seen in the group: the
        # window can be empty, but never more than what was filled.
        assert 0 <= r["window_items"] <= r["items"] and r["window_s"] >= 0, r
        if r["store"] == "elasticsearch":
            assert r["stored"] == r["items"], r  # every span / log record is a document, once
        else:
            # Each partition owns ITEMS series (and a target_info series may come beside them).
            assert r["stored"] is not None and r["stored"] >= PARTITIONS * ITEMS, r
