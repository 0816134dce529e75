"""Build the configured bus as a stack of stages: a base bus, then each stage wrapping the one
below it (``Stage(cfg, inner) -> Bus``), the last one being what the batcher publishes to.

A stage is one more ``Bus`` that holds the bus it wraps, as Vector's buffers or the Collector's
exporter queue: a disk spool in front of Kafka is ``SpoolBus(KafkaBus(...))``, one entry in
``STAGES``. Kafka is imported only when configured, so the embedded default starts without
loading aiokafka.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bus.contract import Bus
from bus.memory import MemoryBus
from settings.config import Config

MEMORY_BUS_BUDGET = 16 * 1024 * 1024

Stage = Callable[[Config, Bus], Bus]
"""Wraps the bus below it; returns it unchanged when the configuration leaves the stage off."""



def spool(cfg: Config, inner: Bus) -> Bus:
    """``SpoolBus(inner)``: a write-ahead log on local disk (``spool.mode`` on_failure or always)."""
    from bus.spool.bus import stage

    return stage(cfg, inner)


STAGES: Sequence[Stage] = (spool,)
"""Applied in order over the base bus."""


def make_bus(cfg: Config, base: Bus | None = None, stages: Sequence[Stage] = STAGES) -> Bus:
    """The base bus (``base``, or the one ``bus.kind`` names) wrapped by every stage in order."""
    bus = base if base is not None else base_bus(cfg)
    for stage in stages:
        bus = stage(cfg, bus)
    return bus


def base_bus(cfg: Config) -> Bus:
    """``MemoryBus`` for ``bus.kind: memory``, ``KafkaBus`` for ``bus.kind: kafka``."""
    if cfg.bus.kind == "memory":
        return memory_bus(cfg)
    from bus.kafka.producer import KafkaBus

    return KafkaBus(cfg.bus.kafka)


def memory_bus(cfg: Config) -> MemoryBus:
    """The in-process bus of the embedded default, bounded to about ``MEMORY_BUS_BUDGET``."""
    # The log holds what the embedded sink has not written yet; bounding it to about
    # MEMORY_BUS_BUDGET bytes of full batches makes a slow sink push back on clients
    # (they wait, then get a retryable 503) instead of growing the process, and keeps the
    # backlog small enough to write out within the shutdown drain.
    max_records = max(8, MEMORY_BUS_BUDGET // cfg.batch.max_bytes)
    return MemoryBus(topic_prefix=cfg.bus.kafka.topic_prefix, max_records=max_records)
