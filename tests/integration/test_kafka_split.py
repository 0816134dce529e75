"""A batch bigger than ``max_message_bytes`` is split into messages under the limit; nothing is lost."""

from __future__ import annotations

import pytest

from bus.contract import Batch
from bus.kafka.producer import KafkaBus
from otlp.signals import HEADER_SIGNAL, HEADER_TENANT, Signal
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import read_topic, unique_kafka_config

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024

SHAPES = {
    Signal.TRACES: {"spans_per_request": 512, "resources": 3},
    Signal.LOGS: {"records": 512, "resources": 3},
    Signal.METRICS: {"points": 200, "resources": 6},
}


@pytest.mark.parametrize("signal", list(Signal))
async def test_oversized_batch_is_split_and_all_items_arrive(signal: Signal) -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("split", max_message_bytes=LIMIT, partitions=2)
    payload = otlp_payloads.payload(signal, **SHAPES[signal])
    items = otlp_payloads.item_count(signal, payload)
    assert len(payload) > 4 * LIMIT
    bus = KafkaBus(cfg)
    await bus.start()
    try:
        await bus.publish(Batch(signal, "acme", payload, items, ["cid-1"]))
    finally:
        await bus.stop()

    records = await read_topic(cfg.bootstrap_servers, signal.topic(cfg.topic_prefix))
    assert len(records) >= 4
    assert all(len(r.value or b"") <= LIMIT for r in records)
    assert sum(otlp_payloads.item_count(signal, r.value or b"") for r in records) == items
    for r in records:
        headers = dict(r.headers)
        assert headers[HEADER_TENANT] == b"acme" and headers[HEADER_SIGNAL] == signal.value.encode()
