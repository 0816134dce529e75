"""The pipeline over a real consumer group: retry a transient failure (partitions paused), park a
poison record on the dead-letter topic with why and where from, go on, and commit everything.

The sink is a scripted stand-in (what it rejects is the test's choice); Kafka, the consumer
group, the offsets and the dead-letter topic are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.contract import Batch, BusRecord
from bus.kafka.consumer import KafkaSource
from bus.kafka.producer import KafkaBus
from otlp.signals import Signal
from pipelines.dead_letter import KafkaDeadLetter
from pipelines.pipeline import Pipeline
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import read_topic, unique_kafka_config
from tests.waiting import await_for

pytestmark = pytest.mark.integration


class PoisonSink:
    """Fails once transiently, then rejects the record of correlation id ``poison`` for good."""

    name = "poison-test"
    signals = frozenset({Signal.LOGS})

    def __init__(self) -> None:
        self.written: list[BusRecord] = []
        self.failed_once = False
        self.paused_seen = False
        self.source: KafkaSource | None = None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(self, records: Sequence[BusRecord]) -> None:
        if not self.failed_once:
            self.failed_once = True
            raise TransientSinkError("store says 503")
        if self.source is not None and self.source.consumer.paused():
            self.paused_seen = True  # the retry happens with the partitions paused
        bad = [Rejection(r, "mapping error: field too long")
               for r in records if r.correlation_ids == ["poison"]]
        self.written.extend(r for r in records if r.correlation_ids != ["poison"])
        if bad:
            raise PermanentSinkError(bad)


async def test_poison_record_goes_to_dead_letter_and_everything_is_committed() -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("dlq", partitions=2)
    dlq_topic = cfg.topic_prefix + "dead_letter"
    bus = KafkaBus(cfg)
    await bus.start()
    payload = otlp_payloads.payload(Signal.LOGS, records=10)
    try:
        for cid in ("good-1", "poison", "good-2"):
            await bus.publish(Batch(Signal.LOGS, "acme", payload, 10, [cid]))
    finally:
        await bus.stop()

    group = cfg.topic_prefix + "group"
    source = KafkaSource(cfg, group, [Signal.LOGS])
    sink = PoisonSink()
    sink.source = source
    dead_letter = KafkaDeadLetter(cfg, dlq_topic, sink.name)
    await source.start()
    await dead_letter.start()
    pipeline = Pipeline(source, sink, dead_letter=dead_letter, backoff_initial_s=0.05)
    task = asyncio.create_task(pipeline.run())
    try:
        async def done() -> bool:
            return len(sink.written) == 2 and pipeline.dead_lettered == 1
        await await_for(done, within=60, what="two records written and one dead-lettered")
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)
        await source.stop()
        await dead_letter.stop()
    assert sink.paused_seen, "partitions were not paused while the transient error was retried"

    parked = await read_topic(cfg.bootstrap_servers, dlq_topic)
    assert len(parked) == 1
    headers = {k: v.decode() for k, v in parked[0].headers}
    assert headers["dlq-reason"] == "mapping error: field too long"
    assert headers["dlq-sink"] == "poison-test"
    assert headers["dlq-original-topic"] == Signal.LOGS.topic(cfg.topic_prefix)
    assert headers["tenant"] == "acme" and headers["correlation-id"] == "poison"
    originals = await read_topic(cfg.bootstrap_servers, Signal.LOGS.topic(cfg.topic_prefix))
    poison = next(r for r in originals if dict(r.headers)["correlation-id"] == b"poison")
    assert (int(headers["dlq-original-partition"]), int(headers["dlq-original-offset"])) == (
        poison.partition, poison.offset)
    assert parked[0].value == poison.value

    # Everything, the parked record included, is committed: a restart re-reads nothing.
    checker = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap_servers, group_id=group,
                               enable_auto_commit=False)
    await checker.start()
    try:
        tps = [TopicPartition(Signal.LOGS.topic(cfg.topic_prefix), p) for p in range(2)]
        ends = await checker.end_offsets(tps)
        committed = {tp: await checker.committed(tp) or 0 for tp in tps}
    finally:
        await checker.stop()
    assert committed == ends
