"""The bench's loss check counts delivered items the way the gateway counts what it acknowledges."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.kafka_count import count_delivered, create_topics, delete_topics, topics_for
from otlp.signals import Signal
from tests import otlp_payloads, stackenv

pytestmark = pytest.mark.integration


async def test_counts_what_ingest_acknowledged_even_a_name_that_is_not_utf8() -> None:
    stackenv.require("kafka")
    good = otlp_payloads.payload(Signal.TRACES, spans_per_request=5, resources=2)
    good_items = otlp_payloads.item_count(Signal.TRACES, good)  # the full decode, as the oracle
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="bad!")
    # The Collector does not check UTF-8, so it acknowledges this span (our edge refuses it):
    # in a Collector round it must count as delivered.
    bad = req.SerializeToString().replace(b"bad!", b"ba\xff!")
    topics = topics_for(f"it_count_{uuid.uuid4().hex[:8]}_", [Signal.TRACES])
    bootstrap = stackenv.KAFKA_BOOTSTRAP
    await create_topics(bootstrap, topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in (good, bad + good):
            await producer.send_and_wait(next(iter(topics)), value)
    finally:
        await producer.stop()
    try:
        delivered = await count_delivered(bootstrap, topics, expect=2 * good_items + 1, within_s=30)
    finally:
        await delete_topics(bootstrap, topics)
    assert (delivered.items, delivered.messages) == (2 * good_items + 1, 2)
