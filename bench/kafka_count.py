"""The loss check: count the items that reached Kafka for one run's topics.

Each run writes to its own topic prefix, so whatever sits in those topics came from this run.
Every message value is a serialized OTLP request (the gateway and the Collector's kafka
exporter both write plain ``otlp_proto``), so counting its spans / log records / data points
gives the delivered items, which must equal what the target acknowledged. They are counted the
way the ingest path counts what it acknowledges (``wire.prepare``) without its content check: a
walk of the framing, far cheaper than a full decode, and not tripped by a value a peer accepted
unchecked (the Collector takes a name that is not UTF-8), which a full decode would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from otlp import wire
from otlp.signals import Signal


@dataclass
class Delivered:
    items: int = 0
    messages: int = 0
    bytes: int = 0


async def count_delivered(bootstrap: str, topics: Mapping[str, Signal], *, expect: int,
                          within_s: float = 60.0, settle_s: float = 3.0) -> Delivered:
    """Read ``topics`` from the beginning and count items, until ``expect`` items are seen.

    A Collector acknowledges before its batch processor exports, so delivery may trail the last
    answer; keep reading until the count reaches ``expect``, or until ``within_s`` elapsed, or
    until nothing new arrived for ``settle_s`` once the end offsets were reached.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=16 * 1024 * 1024, request_timeout_ms=30_000)
    await consumer.start()
    out = Delivered()
    try:
        deadline = time.monotonic() + within_s
        tps: list[TopicPartition] = []
        while time.monotonic() < deadline:
            tps = []
            await consumer._client.force_metadata_update()
            for topic in topics:
                parts = consumer.partitions_for_topic(topic) or set()
                tps.extend(TopicPartition(topic, p) for p in sorted(parts))
            if tps or expect == 0:
                break
            await asyncio.sleep(0.5)
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline and (out.items < expect or expect == 0):
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                signal = topics[tp.topic]
                for rec in records:
                    if rec.value is None:
                        continue
                    # Framing only: what a peer acknowledged counts even where our edge would
                    # have refused its content (the Collector does not check UTF-8).
                    out.items += wire.prepare(signal, rec.value, (), check=False).items
                    out.messages += 1
                    out.bytes += len(rec.value)
                    last_new = time.monotonic()
            if not batch and time.monotonic() - last_new > settle_s:
                ends = await consumer.end_offsets(tps)
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
        return out
    finally:
        await consumer.stop()


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 6) -> None:
    """Create the run's topics up front (same partition count for both systems); existing ones stay."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Drop a run's topics once counted, so repeated benchmarks do not fill the broker's disk."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def topics_for(prefix: str, signals: Iterable[Signal]) -> dict[str, Signal]:
    return {s.topic(prefix): s for s in signals}
