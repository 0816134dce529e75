"""In-process bus for the embedded default: no Kafka, same Batch/BusRecord contract.

It is an append-only log per topic with offsets, so the pipelines runner and sinks run the
same code as against Kafka (offset-derived ids, commit after ack). It is not durable across a
crash of the process, which is the trade a bare-machine default makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bus.contract import Batch, BusRecord, BusUnavailable
from otlp.signals import Signal


class MemoryBus:
    """Producer and log. One consumer per sink reads it through ``source()``."""

    def __init__(self, topic_prefix: str = "otlp_", max_records: int = 10_000,
                 full_wait_s: float = 5.0) -> None:
        self._prefix = topic_prefix
        # The log is the only buffer between ingest and a slower sink: bound it, and make a full
        # log push back on publishers (their clients wait, then get a retryable refusal) rather
        # than grow until the process runs out of memory.
        self._max_records = max_records
        self._full_wait_s = full_wait_s
        self._log: list[BusRecord] = []
        self._base = 0  # offset of self._log[0]
        self._changed = asyncio.Condition()
        self._sources: list[MemorySource] = []

    @property
    def max_item_bytes(self) -> int | None:
        return None  # a record is a reference to the batch's bytes: no size limit

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def readiness(self) -> tuple[bool, str]:
        if len(self._log) >= self._max_records:
            return False, "memory bus full: the sink is behind"
        return True, "memory bus"

    async def publish(self, batch: Batch) -> None:
        headers = {k: v.decode() for k, v in batch.headers()}
        async with self._changed:
            if len(self._log) >= self._max_records:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: len(self._log) < self._max_records), self._full_wait_s
                    )
                except TimeoutError:
                    raise BusUnavailable(
                        f"memory bus full ({self._max_records} batches not yet written by the sink)"
                    ) from None
            # The offset is taken under the lock, so concurrent publishers never share one.
            rec = BusRecord(
                topic=batch.signal.topic(self._prefix),
                partition=0,
                offset=self.end_offset,
                key=batch.tenant.encode(),
                value=batch.payload,
                headers=headers,
                signal=batch.signal,
            )
            self._log.append(rec)
            self._trim()
            self._changed.notify_all()

    def _trim(self) -> None:
        """Forget records every source has committed, keeping memory bounded by the slowest sink."""
        if not self._sources:
            return
        low = min(s.committed for s in self._sources)
        drop = min(low - self._base, len(self._log))
        if drop > 0:
            del self._log[:drop]
            self._base += drop

    def source(self, signals: Sequence[Signal] | None = None) -> MemorySource:
        src = MemorySource(self, frozenset(signals or list(Signal)))
        src.committed = self._base
        src.position = self._base
        self._sources.append(src)
        return src

    @property
    def end_offset(self) -> int:
        return self._base + len(self._log)


class MemorySource:
    """A consumer over the MemoryBus log; filters by signal like a topic subscription."""

    def __init__(self, bus: MemoryBus, signals: frozenset[Signal]) -> None:
        self._bus = bus
        self._signals = signals
        self.position = 0
        self.committed = 0
        self._last: BusRecord | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self in self._bus._sources:
            self._bus._sources.remove(self)

    async def getmany(self, timeout_ms: int, max_records: int) -> Sequence[BusRecord]:
        bus = self._bus
        async with bus._changed:
            if self.position >= bus.end_offset:
                try:
                    await asyncio.wait_for(
                        bus._changed.wait_for(lambda: self.position < bus.end_offset), timeout_ms / 1000
                    )
                except TimeoutError:
                    return []
            start = self.position - bus._base
            chunk = bus._log[start : start + max_records]
            self.position += len(chunk)
        mine = [r for r in chunk if r.signal in self._signals]
        self._last = mine[-1] if mine else None
        if not mine and self.committed == start + bus._base:
            self.committed = self.position  # nothing of ours in the chunk: nothing to wait for
        return mine

    async def commit(self, records: Sequence[BusRecord]) -> None:
        # Committing the last record handed out also commits the records this source filtered
        # out after it, so the log can be trimmed past them.
        if records:
            end = self.position if records[-1] is self._last else records[-1].offset + 1
            self.committed = max(self.committed, end)
        async with self._bus._changed:
            self._bus._trim()
            self._bus._changed.notify_all()  # publishers may be waiting for room in a full log
