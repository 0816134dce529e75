"""The Kafka from ``stack/`` accepts what the gateway's bus will do with it: idempotent
acks=all produce with headers and keys, and a consumer group reading it back and committing."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests import stackenv

pytestmark = pytest.mark.integration


async def test_produce_then_consume_round_trip() -> None:
    stackenv.require("kafka")
    topic = f"stack_check_{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        sent = []
        for i in range(20):
            meta = await producer.send_and_wait(
                topic, value=f"record-{i}".encode(), key=f"tenant-{i % 4}".encode(),
                headers=[("tenant", f"tenant-{i % 4}".encode()), ("signal", b"spans")],
            )
            sent.append((meta.partition, meta.offset))
    finally:
        await producer.stop()
    assert len(set(sent)) == 20

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stackenv.KAFKA_BOOTSTRAP,
                                group_id=f"{topic}-group", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        got: dict[bytes, tuple[bytes | None, dict[str, bytes]]] = {}
        while len(got) < 20:
            batches = await consumer.getmany(timeout_ms=10_000, max_records=100)
            assert batches, f"no records within 10s; have {len(got)}/20"
            for records in batches.values():
                for r in records:
                    got[r.value] = (r.key, dict(r.headers))
        await consumer.commit()
    finally:
        await consumer.stop()

    assert got[b"record-5"] == (b"tenant-1", {"tenant": b"tenant-1", "signal": b"spans"})
    # Same key, same partition: what per-tenant / per-trace ordering relies on.
    by_key: dict[bytes | None, set[int]] = {}
    for (partition, _), i in zip(sent, range(20), strict=True):
        by_key.setdefault(f"tenant-{i % 4}".encode(), set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values())
