"""The one way this project makes a Kafka producer: acks=all and idempotent, so whatever it
writes (the bus's batches, the pipelines' dead letters) is durable once acknowledged."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from settings.config import KafkaConfig

log = logging.getLogger(__name__)


def durable_producer(cfg: KafkaConfig, client_id: str, *, max_request_size: int,
                     compression: str | None = None, linger_ms: int = 0,
                     max_batch_size: int = 16384) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer`` on ``cfg``'s brokers with ``acks=all`` and idempotence; the
    keywords are the per-writer tuning (aiokafka's defaults otherwise)."""
    return AIOKafkaProducer(
        bootstrap_servers=cfg.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=compression,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        max_request_size=max_request_size,
        request_timeout_ms=cfg.request_timeout_ms,
    )


async def close_producer(producer: AIOKafkaProducer, within: float) -> None:
    """Stop a producer without letting a dead broker hold the caller hostage."""
    try:
        await asyncio.wait_for(producer.stop(), within)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.debug("kafka producer stop: %s", describe(exc))


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
