"""Dead-letter topic: records a sink rejects for good are parked, with why, and the pipeline goes on.

The original value, key and headers are kept as they were (so the record can be replayed once
the cause is fixed), and headers say which sink refused it, why, and where it came from. When a
sink refused only part of a record (``Rejection.part``), the value is that part, an Export
request of its own, and ``dlq-part: part`` says so (``whole`` otherwise).
``__call__`` returns only after Kafka acknowledged every dead letter: the pipeline commits the
originals right after, so a dead letter must be durable first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bus.kafka import client
from bus.kafka.client import durable_producer
from bus.kafka.topics import ensure_topics
from pipelines.sinks.base import Rejection, TransientSinkError
from settings.config import KafkaConfig

log = logging.getLogger(__name__)

HEADER_REASON = "dlq-reason"
HEADER_SINK = "dlq-sink"
HEADER_TOPIC = "dlq-original-topic"
HEADER_PARTITION = "dlq-original-partition"
HEADER_OFFSET = "dlq-original-offset"
HEADER_PART = "dlq-part"
_MAX_REASON = 1000


def dead_letter_headers(rej: Rejection, sink: str) -> list[tuple[str, bytes]]:
    """The original headers plus the ``dlq-*`` ones (the reason is cut to a sane length)."""
    rec = rej.record
    headers = [(k, v.encode()) for k, v in rec.headers.items() if not k.startswith("dlq-")]
    headers += [
        (HEADER_REASON, rej.reason[:_MAX_REASON].encode()),
        (HEADER_SINK, sink.encode()),
        (HEADER_TOPIC, rec.topic.encode()),
        (HEADER_PARTITION, str(rec.partition).encode()),
        (HEADER_OFFSET, str(rec.offset).encode()),
        (HEADER_PART, b"whole" if rej.part is None else b"part"),
    ]
    return headers


class KafkaDeadLetter:
    """Durable producer to ``topic``; a failure to park is transient for the pipeline (retry)."""

    def __init__(self, cfg: KafkaConfig, topic: str, sink: str) -> None:
        self._cfg = cfg
        self.topic = topic
        self._sink = sink
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._cfg.create_topics:
            await ensure_topics(self._cfg, [self.topic])
        producer = durable_producer(self._cfg, f"{self._cfg.client_id}-dlq-{self._sink}",
                                    max_request_size=self._cfg.max_message_bytes + 64 * 1024)
        try:
            await client.start(producer, self._cfg, role="dead_letter")
        except BaseException:
            await producer.stop()  # the runner retries start(); leave no half-started client
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __call__(self, rejected: Sequence[Rejection]) -> None:
        if self._producer is None:
            raise TransientSinkError("dead-letter producer not started")
        try:
            futures = [
                await self._producer.send(self.topic, rej.value, key=rej.record.key,
                                          headers=dead_letter_headers(rej, self._sink))
                for rej in rejected
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise TransientSinkError(f"dead-letter topic {self.topic}: {exc}") from exc
        for rej in rejected:
            log.warning("sink %s rejected %s/%d@%d -> %s: %s", self._sink, rej.record.topic,
                        rej.record.partition, rej.record.offset, self.topic, rej.reason)
