"""Speed of cutting a batch into Kafka messages (on the publish path of every batch).

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_kafka_pieces.py --benchmark-enable --benchmark-only
A 1 MiB batch is the default ``batch.max_bytes``; spans/s per core = spans per round / mean.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from bus.kafka.producer import message_pieces
from otlp.signals import Signal
from tests import otlp_payloads

pytestmark = pytest.mark.benchmark(group="kafka-pieces", min_rounds=20)

PAYLOAD = b"".join(otlp_payloads.payload(Signal.TRACES, spans_per_request=512, traces=64, seed=s)
                   for s in range(4))
SPANS = otlp_payloads.item_count(Signal.TRACES, PAYLOAD)
BATCH = Batch(Signal.TRACES, "acme", PAYLOAD, SPANS, ["cid"] * 8)


def test_tenant_keyed_batch_under_the_limit_2048_spans(benchmark: BenchmarkFixture) -> None:
    pieces = benchmark(message_pieces, BATCH, [], 4_000_000, BATCH.headers())
    assert len(pieces) == 1


def test_tenant_keyed_batch_split_in_pieces_2048_spans(benchmark: BenchmarkFixture) -> None:
    pieces = benchmark(message_pieces, BATCH, [], 128 * 1024, BATCH.headers())
    assert len(pieces) > 1


def test_spread_batch_over_6_partitions_256_traces_2048_spans(benchmark: BenchmarkFixture) -> None:
    pieces = benchmark(message_pieces, BATCH, range(6), 1_000_000, BATCH.headers())
    assert [p for p, _, _ in pieces] == list(range(6))
