"""Kafka topic administration: the OTLP topics and the dead-letter topic, created as configured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code as kafka_error_for_code

from bus.kafka import client
from settings.config import KafkaConfig

_TOPIC_EXISTS = 36


def new_topics(cfg: KafkaConfig, names: Sequence[str]) -> list[NewTopic]:
    """The topics as configured: partitions, replicas, and the settings acks=all relies on.

    ``min.insync.replicas`` is set on the topic rather than left to the broker, because it is
    what makes acks=all durable: with the broker's usual default of 1, Kafka acknowledges data
    that only the leader holds, and a leader lost then loses it.
    """
    configs = {"max.message.bytes": str(cfg.max_message_bytes + 64 * 1024)}
    if cfg.min_insync_replicas:
        configs["min.insync.replicas"] = str(cfg.min_insync_replicas)
    return [NewTopic(n, cfg.partitions, cfg.replication_factor, topic_configs=dict(configs)) for n in names]


async def ensure_topics(cfg: KafkaConfig, names: Sequence[str]) -> None:
    """Create the topics that do not exist yet; an existing topic keeps its settings."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, client_id=cfg.client_id + "-admin",
                                request_timeout_ms=cfg.request_timeout_ms, **client.security(cfg))
    try:
        await client.start(admin, cfg)
        resp: Any = await admin.create_topics(new_topics(cfg, names))
        for entry in resp.topic_errors:
            topic, code = entry[0], entry[1]
            if code not in (0, _TOPIC_EXISTS):
                message = entry[2] if len(entry) > 2 else ""
                raise kafka_error_for_code(code)(f"creating topic {topic}: {message}")
    finally:
        await admin.close()
