"""The embedded default: memory bus -> file sink inside the gateway process.

The one place the gateway and the pipelines meet: a worker whose configuration asks for it
(``Config.runs_embedded_pipeline``) builds this, publishes to its memory bus and lets its
pipeline write the file sink, exactly as ``telemetry-gateway pipelines --sink file`` would
from Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bus.contract import BusRecord
from bus.factory import memory_bus
from bus.memory import MemoryBus, MemorySource
from pipelines.pipeline import Pipeline
from pipelines.sinks.file import FileSink
from settings.config import Config

log = logging.getLogger(__name__)

_DRAIN_S = 10.0  # how long shutdown waits for the embedded pipeline to write what was accepted
_DRAIN_POLL_S = 0.02
_EMBEDDED_RECORDS_PER_WRITE = 4


class Embedded:
    """Memory bus -> file sink pipeline inside the gateway process (the embedded default)."""

    def __init__(self, cfg: Config, index: int) -> None:
        self.bus = self._bus = memory_bus(cfg)  # what the worker publishes to (see bus.factory.make_bus)
        self._many = cfg.server.workers > 1
        self.sink = FileSink(cfg.pipelines.file.data_dir, suffix=f"-w{index}" if self._many else "",
                             offload=True)
        self.source = self._bus.source()
        # Records here are whole batches (up to batch.max_bytes); committing every few of them
        # frees room in the bounded memory bus early, so waiting clients are not held for the
        # conversion of a large backlog at once.
        # Records the sink sets aside for good go to its rejects files: no dead-letter topic here.
        self.pipeline = Pipeline(self.source, self.sink, dead_letter=self.sink.park,
                                 max_records=_EMBEDDED_RECORDS_PER_WRITE,
                                 max_unexpected_retries=cfg.pipelines.max_unexpected_retries)
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return (f"sink: files under {self.sink.data_dir}/<tenant>/<signal>"
                f"{'-w<worker>' if self._many else ''}.jsonl")

    async def start(self, on_failure: Callable[[], None]) -> None:
        await self.sink.start()
        self._task = asyncio.get_running_loop().create_task(self.pipeline.run())

        def check(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("embedded pipeline failed; stopping the worker", exc_info=task.exception())
                on_failure()

        self._task.add_done_callback(check)

    async def stop(self) -> bool:
        """Let the pipeline write what the bus holds (bounded), then stop it and close the files.

        False (and an error log saying how many records and items) when acknowledged data
        was not written.
        """
        if self._task is not None and not self._task.done():
            await _drain(self.source, self._bus)
            self.pipeline.stop()
            await asyncio.wait((self._task,))
        await self.sink.stop()
        # The log keeps every record this (only) source has not committed.
        lost = [r for r in self._bus._log if r.offset >= self.source.committed]
        if lost:
            log.error("embedded pipeline: %d acknowledged record(s), %d item(s), were not written to "
                      "the file sink", len(lost), sum(_items(r) for r in lost))
        return not lost


async def _drain(source: MemorySource, bus: MemoryBus) -> None:
    """Wait (bounded) until the embedded pipeline committed everything on the memory bus."""
    deadline = time.monotonic() + _DRAIN_S
    for _ in range(int(_DRAIN_S / _DRAIN_POLL_S)):
        if source.committed >= bus.end_offset or time.monotonic() > deadline:
            break
        await asyncio.sleep(_DRAIN_POLL_S)
    if source.committed < bus.end_offset:
        log.error("embedded pipeline did not drain within %.0fs", _DRAIN_S)


def _items(record: BusRecord) -> int:
    """Spans, log records or metrics in a bus record (0 if it does not even parse)."""
    spec = record.signal.spec
    try:
        req = spec.request.FromString(record.value)
        return sum(len(getattr(s, spec.item_field)) for r in getattr(req, spec.resource_field)
                   for s in getattr(r, spec.scope_field))
    except Exception:  # a record that does not parse still counts as a record lost
        return 0
