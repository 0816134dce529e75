"""Commit on partition revocation: offsets acknowledged but not yet committed when a rebalance
takes the partitions away are committed by the listener, so the next owner starts after them.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.contract import Batch, BusRecord
from bus.kafka.consumer import KafkaSource
from bus.kafka.producer import KafkaBus
from otlp.signals import Signal
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import unique_kafka_config
from tests.waiting import await_for

pytestmark = pytest.mark.integration


async def test_acked_offsets_are_committed_when_partitions_are_revoked() -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("rebalance", partitions=2)
    topic = Signal.LOGS.topic(cfg.topic_prefix)
    bus = KafkaBus(cfg)
    await bus.start()
    payload = otlp_payloads.payload(Signal.LOGS, records=5)
    try:
        for i in range(6):
            await bus.publish(Batch(Signal.LOGS, f"tenant-{i}", payload, 5, [f"c{i}"]))
    finally:
        await bus.stop()

    group = cfg.topic_prefix + "group"
    first = KafkaSource(cfg, group, [Signal.LOGS])
    second = KafkaSource(cfg, group, [Signal.LOGS])
    await first.start()
    taken: list[BusRecord] = []
    try:
        async def six_records() -> bool:
            taken.extend(await first.getmany(500, 100))
            return len(taken) == 6
        await await_for(six_records, within=30, what="the first member to take all six records")
        first.mark_acked(taken)  # acknowledged by the sink, not committed yet

        # A second member joins: the group rebalances and the first member's partitions are revoked.
        await second.start()

        async def rebalanced() -> bool:
            await first.getmany(100, 1)
            await second.getmany(100, 1)
            return bool(second.consumer.assignment())
        await await_for(rebalanced, within=60, what="the second member to get partitions")
    finally:
        await second.stop()
        first._acked.clear()  # so stop() cannot be what committed them
        await first.stop()

    checker = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap_servers, group_id=group,
                               enable_auto_commit=False)
    await checker.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(2)]
        ends = await checker.end_offsets(tps)
        committed = {tp: await checker.committed(tp) or 0 for tp in tps}
    finally:
        await checker.stop()
    assert committed == ends, "the revocation listener committed the acknowledged offsets"
