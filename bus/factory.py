"""Pick the Bus implementation the configuration names.

Kafka is imported only when configured, so the embedded default starts without loading aiokafka.
"""

from __future__ import annotations

from bus.contract import Bus
from bus.memory import MemoryBus
from settings.config import Config

MEMORY_BUS_BUDGET = 16 * 1024 * 1024


def make_bus(cfg: Config) -> Bus:
    """``MemoryBus`` for ``bus.kind: memory``, ``KafkaBus`` for ``bus.kind: kafka``."""
    if cfg.bus.kind == "memory":
        # The log holds what the embedded sink has not written yet; bounding it to about
        # MEMORY_BUS_BUDGET bytes of full batches makes a slow sink push back on clients
        # (they wait, then get a retryable 503) instead of growing the process, and keeps the
        # backlog small enough to write out within the shutdown drain.
        max_records = max(8, MEMORY_BUS_BUDGET // cfg.batch.max_bytes)
        return MemoryBus(topic_prefix=cfg.bus.kafka.topic_prefix, max_records=max_records)
    from bus.kafka.producer import KafkaBus

    return KafkaBus(cfg.bus.kafka)


def max_item_bytes(cfg: Config) -> int | None:
    """The largest single item the configured bus can carry; None when it has no such limit."""
    if cfg.bus.kind == "memory":
        return None
    from bus.kafka import producer as kafka

    return kafka.max_item_bytes(cfg.bus.kafka)
