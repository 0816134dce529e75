"""KafkaBus logic that needs no broker: message pieces and refusing quickly while not connected.

Against the real broker see tests/integration/test_kafka_*.py and tests/e2e/test_kafka_*.py.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import Batch, BusUnavailable
from bus.kafka import producer as kafka_bus
from bus.kafka.producer import KafkaBus, message_pieces
from bus.kafka.topics import new_topics
from otlp.signals import Signal
from settings.config import KafkaConfig
from tests import otlp_payloads
from tests.gateway_process import free_port
from tests.waiting import await_for


def batch(signal: Signal, payload: bytes, cids: int = 3) -> Batch:
    return Batch(signal, "acme", payload, otlp_payloads.item_count(signal, payload),
                 [f"cid-{i}" for i in range(cids)])


@pytest.mark.parametrize("signal", list(Signal))
def test_small_batch_is_one_message_keyed_by_tenant(signal: Signal) -> None:
    b = batch(signal, otlp_payloads.payload(signal))
    pieces = message_pieces(b, "tenant", 1_000_000, b.headers())
    assert pieces == [(b"acme", b.payload)]


@pytest.mark.parametrize("signal", list(Signal))
def test_big_batch_is_split_under_the_limit_keeping_every_item(signal: Signal) -> None:
    kwargs = {"resources": 4} if signal is not Signal.METRICS else {"resources": 8}
    b = batch(signal, otlp_payloads.payload(signal, **kwargs))
    limit = len(b.payload) // 3
    pieces = message_pieces(b, "tenant", limit, b.headers())
    assert len(pieces) >= 3
    assert all(len(v) <= limit for _, v in pieces)
    assert sum(otlp_payloads.item_count(signal, v) for _, v in pieces) == b.items


def test_trace_partitioning_keys_each_piece_by_its_trace_id() -> None:
    b = batch(Signal.TRACES, otlp_payloads.payload(Signal.TRACES, traces=7))
    pieces = message_pieces(b, "trace_id", 1_000_000, b.headers())
    assert len(pieces) == 7
    for key, value in pieces:
        req = ExportTraceServiceRequest.FromString(value)
        ids = {s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert ids == {key}
    assert sum(otlp_payloads.item_count(Signal.TRACES, v) for _, v in pieces) == b.items


def test_trace_partitioning_leaves_logs_keyed_by_tenant() -> None:
    b = batch(Signal.LOGS, otlp_payloads.payload(Signal.LOGS))
    assert message_pieces(b, "trace_id", 1_000_000, b.headers()) == [(b"acme", b.payload)]


def test_topics_carry_replication_and_min_insync_replicas_when_set() -> None:
    cfg = KafkaConfig(partitions=4, replication_factor=3, min_insync_replicas=2, max_message_bytes=1_000_000)
    topics = new_topics(cfg, ["a", "b"])
    assert [(t.name, t.num_partitions, t.replication_factor) for t in topics] == [("a", 4, 3), ("b", 4, 3)]
    assert topics[0].topic_configs == {"max.message.bytes": "1065536", "min.insync.replicas": "2"}
    # Unset: the topic inherits the broker's min.insync.replicas instead of overriding it.
    assert "min.insync.replicas" not in new_topics(KafkaConfig(), ["a"])[0].topic_configs


async def test_gateway_starts_unready_and_refuses_quickly_without_kafka() -> None:
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", start_wait_ms=300,
                      request_timeout_ms=2000)
    bus = KafkaBus(cfg)
    t0 = time.monotonic()
    await bus.start()
    try:
        assert time.monotonic() - t0 < 2.0
        ready, why = bus.readiness()
        assert not ready and why.startswith("kafka: cannot connect to 127.0.0.1:"), why
        t1 = time.monotonic()
        with pytest.raises(BusUnavailable, match="kafka: cannot connect"):
            await bus.publish(batch(Signal.LOGS, otlp_payloads.payload(Signal.LOGS)))
        assert time.monotonic() - t1 < 0.5
    finally:
        await bus.stop()


async def test_a_reconnect_creates_no_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnecting after a broker failure must not wait on CreateTopics (see KafkaBus._maintain)."""
    created: list[list[str]] = []
    producers: list[object] = []

    async def ensure_topics(cfg: KafkaConfig, names: list[str]) -> None:
        created.append(list(names))

    class Producer:
        def __init__(self) -> None:
            self.client = SimpleNamespace(fetch_all_metadata=self.nothing)

        async def start(self) -> None:
            producers.append(self)

        async def stop(self) -> None:
            pass

        async def nothing(self) -> None:
            pass

    monkeypatch.setattr(kafka_bus, "ensure_topics", ensure_topics)
    bus = KafkaBus(KafkaConfig(start_wait_ms=2000))
    monkeypatch.setattr(bus, "_new_producer", Producer)
    await bus.start()
    try:
        assert bus.readiness()[0] and len(created) == 1
        bus._mark_broken(producers[0], "publish failed")  # type: ignore[arg-type]

        async def reconnected() -> bool:
            return len(producers) == 2 and bus.readiness()[0]

        await await_for(reconnected, within=5, what="a second producer")
        assert len(created) == 1
    finally:
        await bus.stop()
