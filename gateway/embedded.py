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
from contextlib import AsyncExitStack

from bus.contract import BusRecord
from bus.factory import memory_bus
from bus.memory import MemoryBus, MemorySource
from pipelines.pipeline import Pipeline
from pipelines.sinks.file import FileSink
from runtime import lifecycle
from settings.config import Config

log = logging.getLogger(__name__)

_DRAIN_S = 10.0  # how long shutdown waits for the embedded pipeline to write what was accepted
_DRAIN_POLL_S = 0.02
_EMBEDDED_RECORDS_PER_WRITE = 4


class Embedded(lifecycle.Composite):
    """Memory bus -> file sink pipeline inside the gateway process (the embedded default).

    ``on_failure`` is called when acknowledged data cannot be written: the pipeline failed while
    running (the worker stops: accepting more would only fill memory), or ``stop`` left records
    unwritten (the worker exits 1).
    """

    def __init__(self, cfg: Config, index: int, on_failure: Callable[[], None]) -> None:
        self.bus = self._bus = memory_bus(cfg)  # what the worker publishes to (see bus.factory.make_bus)
        self._many = cfg.server.workers > 1
        self._on_failure = on_failure
        self.sink = FileSink(cfg.pipelines.file.data_dir, suffix=f"-w{index}" if self._many else "",
                             offload=True, file_format=cfg.pipelines.file.format)
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
                f"{'-w<worker>' if self._many else ''}{self.sink.extension}")

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        # Stopped in reverse: drain and stop the pipeline, close the files, then count what the
        # bus still holds unwritten.
        stack.callback(self._check_written)
        await lifecycle.enter(stack, self.sink)
        self._task = asyncio.get_running_loop().create_task(self.pipeline.run(), name="embedded-pipeline")
        self._task.add_done_callback(self._check_running)
        stack.push_async_callback(self._stop_pipeline)

    def _check_running(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("embedded pipeline failed; stopping the worker", exc_info=task.exception())
            self._on_failure()

    async def _stop_pipeline(self) -> None:
        """Let the pipeline write what the bus holds (bounded), then stop it."""
        task = self._task
        if task is not None and not task.done():
            await _drain(self.source, self._bus)
            self.pipeline.stop()
            await asyncio.wait((task,))

    def _check_written(self) -> None:
        """After the files are closed: acknowledged records not written make the exit code 1, and
        the log says how many records and items."""
        # The log keeps every record this (only) source has not committed.
        lost = [r for r in self._bus._log if r.offset >= self.source.committed]
        if lost:
            log.error("embedded pipeline: %d acknowledged record(s), %d item(s), were not written to "
                      "the file sink", len(lost), sum(_items(r) for r in lost))
            self._on_failure()


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
