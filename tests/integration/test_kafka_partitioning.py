"""``partition_by: spread`` (the default) against the real broker, read back from Kafka: one
tenant's batches cover every partition, each trace and each metric resource identity stays on
one partition, a batch is at most one message per partition, and ``tenant`` keeps the old way."""

from __future__ import annotations

from collections import defaultdict

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import Batch
from bus.kafka.producer import KafkaBus
from otlp.signals import HEADER_CORRELATION, HEADER_TENANT, Signal
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import read_topic, unique_kafka_config

pytestmark = pytest.mark.integration

PARTITIONS = 4
BATCHES = 5


def traces_batch(i: int) -> bytes:
    """The same 24 traces (12 per resource; the seed fixes the ids) in every batch, with fresh
    span ids, as when a trace's spans reach the gateway in different requests."""
    req = otlp_payloads.traces_request(spans_per_request=60, traces=12, resources=2)
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.span_id = bytes([i]) + span.span_id[1:]
    data: bytes = req.SerializeToString()
    return data


def metrics_batch() -> bytes:
    """16 service instances of 4 services; the data points are the same in every batch."""
    return b"".join(otlp_payloads.payload(Signal.METRICS, points=2, resources=4,
                                          resource_extra={"service.instance.id": f"i-{n}"})
                    for n in range(4))


async def publish_all(partition_by: str) -> tuple[str, dict[Signal, int]]:
    stackenv.require("kafka")
    cfg = unique_kafka_config("partition", partition_by=partition_by, partitions=PARTITIONS)
    bus = KafkaBus(cfg)
    await bus.start()
    sent: dict[Signal, int] = defaultdict(int)
    try:
        assert bus.readiness()[0], bus.readiness()[1]
        for i in range(BATCHES):
            for signal, data in ((Signal.TRACES, traces_batch(i)), (Signal.METRICS, metrics_batch()),
                                 (Signal.LOGS, otlp_payloads.payload(Signal.LOGS, records=10))):
                items = otlp_payloads.item_count(signal, data)
                await bus.publish(Batch(signal, "acme", data, items, [f"cid-{i}"]))
                sent[signal] += items
    finally:
        await bus.stop()
    return cfg.topic_prefix, sent


async def test_one_tenant_spreads_over_every_partition_keeping_traces_and_series_whole() -> None:
    prefix, sent = await publish_all("spread")

    traces = await read_topic(stackenv.KAFKA_BOOTSTRAP, Signal.TRACES.topic(prefix))
    assert len(traces) == BATCHES * PARTITIONS, "24 traces fill 4 partitions: one message each per batch"
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    spans = 0
    for rec in traces:
        req = ExportTraceServiceRequest.FromString(rec.value or b"")
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans += len(ss.spans)
                for s in ss.spans:
                    partitions_of[s.trace_id].add(rec.partition)
        headers = dict(rec.headers)
        assert rec.key == b"acme" and headers[HEADER_TENANT] == b"acme"
        assert headers[HEADER_CORRELATION].startswith(b"cid-")
    assert spans == sent[Signal.TRACES]
    assert len(partitions_of) == 24
    assert all(len(p) == 1 for p in partitions_of.values()), dict(partitions_of)
    assert {p for ps in partitions_of.values() for p in ps} == set(range(PARTITIONS))

    metrics = await read_topic(stackenv.KAFKA_BOOTSTRAP, Signal.METRICS.topic(prefix))
    identity_at: dict[tuple[str, str], set[int]] = defaultdict(set)
    points = 0
    for rec in metrics:
        points += otlp_payloads.item_count(Signal.METRICS, rec.value or b"")
        for rm in ExportMetricsServiceRequest.FromString(rec.value or b"").resource_metrics:
            attrs = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            identity_at[(attrs["service.name"], attrs["service.instance.id"])].add(rec.partition)
    assert points == sent[Signal.METRICS]
    assert len(identity_at) == 16
    assert all(len(p) == 1 for p in identity_at.values()), dict(identity_at)
    assert len({p for ps in identity_at.values() for p in ps}) > 1, "service instances spread"

    logs = await read_topic(stackenv.KAFKA_BOOTSTRAP, Signal.LOGS.topic(prefix))
    assert sum(otlp_payloads.item_count(Signal.LOGS, r.value or b"") for r in logs) == sent[Signal.LOGS]
    assert len({r.partition for r in logs}) == PARTITIONS, "five log batches round robin over four partitions"


async def test_partition_by_tenant_puts_all_of_a_tenant_on_one_partition() -> None:
    prefix, sent = await publish_all("tenant")
    for signal in Signal:
        records = await read_topic(stackenv.KAFKA_BOOTSTRAP, signal.topic(prefix))
        assert len({r.partition for r in records}) == 1, signal
        assert {r.key for r in records} == {b"acme"}
        assert sum(otlp_payloads.item_count(signal, r.value or b"") for r in records) == sent[signal]
