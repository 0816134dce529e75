"""Speed of spreading one tenant's batch over a topic's partitions (on the publish path of every
batch with ``partition_by: spread``), beside the tenant-keyed path it replaces.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_partitioning.py --benchmark-enable --benchmark-only
Batches are 1 MiB-class (the default ``batch.max_bytes``) of one tenant; items/s per core =
items per round / mean. Six partitions is ``bus.kafka.partitions``' default. Traces are split in C
(``_otlpcheck.span_buckets``); the Python reference ``wire.group_spans`` is measured beside it.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from bus.kafka.producer import message_pieces
from otlp import wire
from otlp.partitioning import buckets, trace_bucket
from otlp.signals import Signal
from tests import otlp_payloads

pytestmark = pytest.mark.benchmark(group="partitioning", min_rounds=20)

PARTITIONS = range(6)
# 2048 spans in 4 requests of 512 spans over 64 traces each (256 traces), as the batcher joins them.
TRACES = b"".join(otlp_payloads.payload(Signal.TRACES, spans_per_request=512, traces=64, seed=s)
                  for s in range(4))
# 40 resources (service instances) x 5 metrics x 20 points = 4000 data points.
METRICS = b"".join(otlp_payloads.payload(Signal.METRICS, points=20, resources=8,
                                         resource_extra={"service.instance.id": f"i-{s}"}) for s in range(5))
LOGS = otlp_payloads.payload(Signal.LOGS, records=512, resources=4)


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.METRICS, Signal.LOGS])
def test_bench_buckets_6_partitions(benchmark: BenchmarkFixture, signal: Signal) -> None:
    data = {Signal.TRACES: TRACES, Signal.METRICS: METRICS, Signal.LOGS: LOGS}[signal]
    out = benchmark(buckets, signal, data, 6)
    items = otlp_payloads.item_count(signal, data)
    assert sum(otlp_payloads.item_count(signal, v) for v in out.values()) == items
    assert len(out) == (1 if signal is Signal.LOGS else 6)


@pytest.mark.parametrize("partitions", [[], list(PARTITIONS)], ids=["tenant", "spread"])
def test_bench_message_pieces_2048_spans(benchmark: BenchmarkFixture, partitions: list[int]) -> None:
    batch = Batch(Signal.TRACES, "acme", TRACES, 2048, ["cid"] * 4)
    pieces = benchmark(message_pieces, batch, partitions, 1_000_000, batch.headers())
    assert len(pieces) == (1 if not partitions else 6)


@pytest.mark.parametrize("partitions", [[], list(PARTITIONS)], ids=["tenant", "spread"])
def test_bench_message_pieces_4000_points(benchmark: BenchmarkFixture, partitions: list[int]) -> None:
    batch = Batch(Signal.METRICS, "acme", METRICS, 4000, ["cid"] * 5)
    pieces = benchmark(message_pieces, batch, partitions, 1_000_000, batch.headers())
    assert len(pieces) == (1 if not partitions else 6)


def test_bench_group_spans_python_2048_spans(benchmark: BenchmarkFixture) -> None:
    """The pure-Python split that ``buckets`` falls back to, for the C version's speed-up."""
    out = benchmark(wire.group_spans, TRACES, lambda trace_id: trace_bucket(trace_id, 6))
    assert out == buckets(Signal.TRACES, TRACES, 6)
