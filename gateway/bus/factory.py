"""Pick the Bus implementation the configuration names.

Kafka is imported only when configured, so the embedded default starts without loading aiokafka.
"""

from __future__ import annotations

from gateway.bus.base import Bus
from gateway.bus.memory import MemoryBus
from gateway.config import Config


def make_bus(cfg: Config) -> Bus:
    """``MemoryBus`` for ``bus.kind: memory``, ``KafkaBus`` for ``bus.kind: kafka``."""
    if cfg.bus.kind == "memory":
        return MemoryBus(topic_prefix=cfg.bus.kafka.topic_prefix)
    from gateway.bus.kafka import KafkaBus

    return KafkaBus(cfg.bus.kafka)
