"""``partition_by: trace_id``: every span of a trace lands on one partition (read back from Kafka)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import Batch
from bus.kafka.producer import KafkaBus
from otlp.signals import HEADER_CORRELATION, HEADER_TENANT, Signal
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import read_topic, unique_kafka_config

pytestmark = pytest.mark.integration


async def test_spans_of_a_trace_share_one_partition() -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("partition", partition_by="trace_id", partitions=4)
    bus = KafkaBus(cfg)
    await bus.start()
    sent = 0
    trace_ids_sent: set[bytes] = set()
    try:
        assert bus.readiness()[0], bus.readiness()[1]
        # The same 24 traces (12 per resource; the seed fixes the ids) recur in every batch, as when a trace's
        # spans reach the gateway in different requests.
        for i in range(5):
            payload = otlp_payloads.payload(Signal.TRACES, spans_per_request=60, traces=12, resources=2)
            req = ExportTraceServiceRequest.FromString(payload)
            for rs in req.resource_spans:  # fresh span ids per batch, same trace ids
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        span.span_id = bytes([i]) + span.span_id[1:]
                        trace_ids_sent.add(span.trace_id)
            data = req.SerializeToString()
            items = otlp_payloads.item_count(Signal.TRACES, data)
            await bus.publish(Batch(Signal.TRACES, "acme", data, items, [f"cid-{i}"]))
            sent += items
    finally:
        await bus.stop()

    records = await read_topic(cfg.bootstrap_servers, Signal.TRACES.topic(cfg.topic_prefix))
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    spans = 0
    for rec in records:
        req = ExportTraceServiceRequest.FromString(rec.value or b"")
        trace_ids = {s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert trace_ids == {rec.key}, "a message holds exactly the spans of the trace it is keyed by"
        partitions_of[rec.key or b""].add(rec.partition)
        spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        headers = dict(rec.headers)
        assert headers[HEADER_TENANT] == b"acme" and headers[HEADER_CORRELATION].startswith(b"cid-")
    assert spans == sent
    assert set(partitions_of) == trace_ids_sent
    assert all(len(p) == 1 for p in partitions_of.values()), dict(partitions_of)
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "traces spread over partitions"
