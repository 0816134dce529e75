"""One benchmark per stage of the latency budget (docs/architecture.md, "Latency budget"), per
512-span request (the OTel SDK BatchSpanProcessor's batch).

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_stages.py --benchmark-enable --benchmark-only

Stages, in the order a request meets them:

- receive / decompress: ``test_stage_receive_decompress_gzip`` (a gzip body, as the SDKs send
  with compression on; gRPC without compression hands the message bytes on as they came).
- parse + validate: the content check, ``test_bench_content_check_512_spans`` of
  ``test_bench_ingest_path``, collected here again under the stage's name.
- enrich / stamp: the framing walk that stamps ``tenant.id`` and ``correlation.id``,
  ``test_bench_prepare_512_spans_without_content_check`` there, collected here likewise.
- batch wait: ``test_stage_batch_wait_idle_key``, what group commit costs a request whose
  (signal, tenant) has nothing in flight. Under load the wait behind a publish in flight is a
  share of the next stage's time, which the bench measures end to end.
- publish to Kafka ack: ``test_stage_publish_encode_*``, the part of a publish that runs on the
  event loop (the split into partition messages and the Kafka record batch with its
  compression), per codec. The broker's round trip is the rest; it needs a broker, so the
  bench's ``gateway_kafka_produce_seconds`` measures it, not a unit benchmark. The split alone for
  metrics: ``test_stage_publish_split_metrics`` (C, and the Python reference it replaced).
- answer: ``test_stage_answer_grpc_ok``, the Export response the receiver serializes.
"""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from bus.kafka.producer import message_pieces
from gateway.batcher import Batcher
from gateway.receivers import compression
from gateway.receivers.encodings import export_response
from otlp import partitioning, wire
from otlp.signals import Signal
from otlp.wire import prepare
from tests import otlp_payloads
from tests.unit.test_bench_ingest_path import (
    ATTRS,
    SPANS,
    TRACES_512,
)
from tests.unit.test_bench_ingest_path import (
    test_bench_content_check_512_spans as test_stage_parse_validate,  # noqa: F401 (collected here)
)
from tests.unit.test_bench_ingest_path import (
    test_bench_prepare_512_spans_without_content_check as test_stage_enrich_stamp,  # noqa: F401
)

TRACES_512_GZIP = gzip.compress(TRACES_512, compresslevel=6)
PREPARED = prepare(Signal.TRACES, TRACES_512, ATTRS)
PARTITIONS = list(range(6))  # bus.kafka.partitions' default
# The compression codes of Kafka's record batch attributes (Kafka protocol, RecordBatch).
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

pytestmark = pytest.mark.benchmark(group="latency-stages", min_rounds=20)


def test_stage_receive_decompress_gzip(benchmark: BenchmarkFixture) -> None:
    """A gzip-compressed 512-span body inflated by the receivers' bounded decoder."""
    limits = compression.Limits(64 * 1024 * 1024, 0.0)
    assert benchmark(compression.decode, compression.GZIP, TRACES_512_GZIP, limits) == TRACES_512


async def _published(batch: Batch) -> None:
    return None


def test_stage_batch_wait_idle_key(benchmark: BenchmarkFixture) -> None:
    """From ``Batcher.add`` to the request's future settled, its key idle and the publish a no-op:
    the loop turns group commit adds to a request at low load (no timer)."""
    batcher = Batcher(_published, max_bytes=1 << 20, max_age_s=3600)

    async def one() -> None:
        await batcher.add(Signal.TRACES, "acme", PREPARED.payload, PREPARED.items, "c")

    async def timed() -> None:
        # Through a task, as a receiver's handler runs, and bounded so a regression cannot hang.
        await asyncio.wait_for(one(), 5)

    with asyncio.Runner() as runner:
        benchmark(lambda: runner.run(timed()))
        runner.run(batcher.close())
    assert batcher.pending_items == 0


def _encode_for_kafka(batch: Batch, codec: int) -> int:
    """What ``KafkaBus.publish`` and aiokafka do on the loop before the bytes leave: the batch
    split into partition messages, one record batch per partition, compressed. Bytes out."""
    headers = batch.headers()
    sent = 0
    for _partition, key, value in message_pieces(batch, PARTITIONS, 1_000_000, headers):
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, 0, 1_000_000)
        builder.append(0, None, key, value, list(headers))
        sent += len(builder.build())
    return sent


@pytest.mark.parametrize("codec", list(CODECS))
def test_stage_publish_encode(benchmark: BenchmarkFixture, codec: str) -> None:
    batch = Batch(Signal.TRACES, "acme", PREPARED.payload, SPANS, ["c"])
    sent = benchmark(_encode_for_kafka, batch, CODECS[codec])
    if codec == "none":
        assert sent > len(PREPARED.payload)
    else:
        assert 0 < sent < len(PREPARED.payload)


# 520 data points (5 kinds x 13) over 8 resources, one service instance each: the split's unit of
# work is a ResourceMetrics, so several per request.
METRICS_8_RESOURCES = otlp_payloads.payload(Signal.METRICS, points=13, resources=8,
                                            resource_extra={"service.instance.id": "i-1"})


def _metrics_split_python(payload: bytes) -> dict[int, bytes]:
    return wire.group_resources(payload, partitioning.METRIC_IDENTITY_KEYS,
                                lambda attrs: partitioning.metric_bucket(attrs, len(PARTITIONS)))


@pytest.mark.parametrize("impl", ["c", "python"])
def test_stage_publish_split_metrics(benchmark: BenchmarkFixture, impl: str) -> None:
    """A metrics request split into partition messages by job/instance: ``partitioning.buckets``
    (C, ``_otlpcheck.metric_buckets``) and the Python reference ``wire.group_resources``."""
    if impl == "c":
        out = benchmark(partitioning.buckets, Signal.METRICS, METRICS_8_RESOURCES, len(PARTITIONS))
    else:
        out = benchmark(_metrics_split_python, METRICS_8_RESOURCES)
    assert out == _metrics_split_python(METRICS_8_RESOURCES)
    assert sum(otlp_payloads.item_count(Signal.METRICS, v) for v in out.values()) == 520


def test_stage_answer_grpc_ok(benchmark: BenchmarkFixture) -> None:
    """The OK ExportTraceServiceResponse a gRPC client gets: empty, no partial success."""
    assert benchmark(lambda: export_response(Signal.TRACES).SerializeToString()) == b""
