"""KafkaBus logic that needs no broker: message pieces and refusing quickly while not connected.

Against the real broker see tests/integration/test_kafka_*.py and tests/e2e/test_kafka_*.py.
"""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import Batch, BusUnavailable
from bus.kafka import producer as kafka_bus
from bus.kafka.producer import KafkaBus, message_pieces
from bus.kafka.topics import new_topics
from otlp.partitioning import trace_bucket
from otlp.signals import Signal
from settings.config import KafkaConfig
from tests import otlp_payloads
from tests.gateway_process import free_port
from tests.kafka_fakes import HealthyClient
from tests.waiting import await_for


def batch(signal: Signal, payload: bytes, cids: int = 3) -> Batch:
    return Batch(signal, "acme", payload, otlp_payloads.item_count(signal, payload),
                 [f"cid-{i}" for i in range(cids)])


@pytest.mark.parametrize("signal", list(Signal))
def test_small_batch_is_one_message_keyed_by_tenant(signal: Signal) -> None:
    b = batch(signal, otlp_payloads.payload(signal))
    pieces = message_pieces(b, [], 1_000_000, b.headers())
    assert pieces == [(None, b"acme", b.payload)]


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("partitions", [[], [0, 1, 2, 3, 4, 5]])
def test_big_batch_is_split_under_the_limit_keeping_every_item(signal: Signal, partitions: list[int]) -> None:
    kwargs = {"resources": 4} if signal is not Signal.METRICS else {"resources": 8}
    b = batch(signal, otlp_payloads.payload(signal, **kwargs))
    limit = len(b.payload) // 3
    pieces = message_pieces(b, partitions, limit, b.headers())
    assert len(pieces) >= 3
    assert all(len(v) <= limit for _, _, v in pieces)
    assert sum(otlp_payloads.item_count(signal, v) for _, _, v in pieces) == b.items


def test_spread_traces_one_message_per_partition_by_trace_id() -> None:
    b = batch(Signal.TRACES, otlp_payloads.payload(Signal.TRACES, traces=40))
    ids = [10, 11, 12, 13]  # partition ids need not start at 0: buckets index them in order
    pieces = message_pieces(b, [13, 12, 11, 10], 1_000_000, b.headers())
    assert [p for p, _, _ in pieces] == ids, "40 traces fill every partition, one message each"
    for partition, key, value in pieces:
        assert key == b"acme"
        req = ExportTraceServiceRequest.FromString(value)
        tids = {s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert {ids[trace_bucket(t, 4)] for t in tids} == {partition}
    assert sum(otlp_payloads.item_count(Signal.TRACES, v) for _, _, v in pieces) == b.items


def test_spread_logs_take_turns_over_the_partitions() -> None:
    b = batch(Signal.LOGS, otlp_payloads.payload(Signal.LOGS))
    assert [message_pieces(b, [0, 1, 2], 1_000_000, b.headers(), turn)[0][0] for turn in range(5)] == \
        [0, 1, 2, 0, 1]


def test_spread_sends_a_batch_it_cannot_walk_whole_to_one_partition() -> None:
    b = Batch(Signal.METRICS, "acme", b"\x0a\x05\x0a\x10", 0, [])
    assert message_pieces(b, [0, 1, 2], 1_000_000, b.headers(), 4) == [(1, b"acme", b.payload)]


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
            self.client = HealthyClient()

        async def start(self) -> None:
            producers.append(self)

        async def stop(self) -> None:
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
