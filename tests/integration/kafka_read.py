"""Read a whole topic back with aiokafka (every partition, from the start to the current end)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from settings.config import KafkaConfig
from tests import stackenv


def unique_kafka_config(name: str, **overrides: object) -> KafkaConfig:
    """A KafkaConfig on the stack broker with a topic prefix of its own (runs never meet)."""
    prefix = f"it_{name}_{uuid.uuid4().hex[:8]}_"
    return KafkaConfig(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, topic_prefix=prefix,
                       **overrides)  # type: ignore[arg-type]


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record now in ``topic``, partition by partition, without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = await consumer._client._wait_on_metadata(topic)  # the partition ids of the topic
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, msgs in batches.items():
                out.extend(msgs)
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
