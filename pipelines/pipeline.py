"""One source feeding one sink: read, write, and commit only after the sink acknowledged.

This loop is shared by the embedded gateway (MemoryBus -> file sink) and the Kafka pipelines
runner, so at-least-once behaviour is the same code in both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.bus.base import BusRecord, Source
from pipelines.sinks.base import PermanentSinkError, Rejection, Sink, TransientSinkError

log = logging.getLogger(__name__)

DeadLetter = Callable[[Sequence[Rejection]], Awaitable[None]]


class Pipeline:
    """Pump records from ``source`` into ``sink`` until stopped."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        *,
        dead_letter: DeadLetter | None = None,
        max_records: int = 500,
        poll_timeout_ms: int = 200,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.source = source
        self.sink = sink
        self._dead_letter = dead_letter
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stopping = asyncio.Event()
        self.written = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()``; the batch in hand is finished (written and committed) first."""
        while not self._stopping.is_set():
            records = await self.source.getmany(self._poll_timeout_ms, self._max_records)
            if records:
                await self._deliver(records)
                await self.source.commit(records)

    async def _deliver(self, records: Sequence[BusRecord]) -> None:
        delay = self._backoff_initial_s
        while True:
            try:
                await self.sink.write(records)
                self.written += len(records)
                return
            except TransientSinkError as exc:
                log.warning("sink %s: transient error, retrying in %.1fs: %s", self.sink.name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max_s)
            except PermanentSinkError as exc:
                self.written += len(records) - len(exc.rejected)
                self.dead_lettered += len(exc.rejected)
                if self._dead_letter is None:
                    for rej in exc.rejected:
                        log.error("sink %s rejected %s/%d@%d: %s", self.sink.name, rej.record.topic,
                                  rej.record.partition, rej.record.offset, rej.reason)
                else:
                    await self._dead_letter(exc.rejected)
                return
