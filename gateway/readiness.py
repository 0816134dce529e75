"""``/readyz`` for a gateway of N workers, whichever worker the probe reaches.

The workers share the admin port through SO_REUSEPORT, so a load balancer's probe lands on one
of them at random. If each answered for itself, a host with one worker whose bus is gone (or
whose event loop is wedged) would pass half the probes and keep getting traffic that fails.
So every worker writes its own state to a small file in a directory of the run, about once a
second, and ``/readyz`` answers for the host: ready only when every worker reported recently
and each said it is ready; otherwise 503 with the reasons, worker by worker.

A report older than a few periods counts as not ready: a worker that cannot write one cannot
serve requests either.

Each worker's own state is also the gauge ``gateway_ready{worker}`` (1 ready, 0 not): set with
every report, or, for a gateway of one process (no shared directory), read at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway import metrics
from runtime import lifecycle

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]

PERIOD_S = 1.0
STALE_AFTER_PERIODS = 3


# Worker indexes whose ``gateway_ready`` child reads a function (``expose``).
_functions: set[int] = set()


def _set_ready(index: int, value: float) -> None:
    """Set ``gateway_ready{worker=index}`` to a value, replacing a function an ``expose`` of the
    same worker index installed (a value set on a child that reads a function is never seen).

    The child is removed only then: in multiprocess mode (``--workers N``, where ``expose`` is
    not used) prometheus_client warns on every ``remove``, and the value lives in the worker's
    file whatever the child object, so setting it is all that is needed there."""
    if index in _functions:
        _functions.discard(index)
        with contextlib.suppress(KeyError):
            metrics.ready.remove(str(index))
    metrics.ready.labels(worker=str(index)).set(value)


def expose(own: Readiness, index: int = 0) -> None:
    """A gateway of one process: ``gateway_ready`` reads ``own`` at each scrape."""
    _functions.add(index)
    metrics.ready.labels(worker=str(index)).set_function(lambda: 1.0 if own()[0] else 0.0)


class SharedReadiness:
    """One worker's side: publish its own state, answer for all ``workers``."""

    def __init__(self, directory: Path, index: int, workers: int, own: Readiness, *,
                 period_s: float = PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._dir = directory
        self._index = index
        self._workers = workers
        self._own = own
        self._period_s = period_s
        self._clock = clock  # CLOCK_MONOTONIC: one clock for all processes of the host
        self._publishing: asyncio.Task[None] | None = None

    def _path(self, index: int) -> Path:
        return self._dir / f"worker-{index}.json"

    def publish(self) -> None:
        """Write this worker's state; the rename makes a reader see a whole report or the last one."""
        ready, reason = self._own()
        _set_ready(self._index, 1.0 if ready else 0.0)
        tmp = self._dir / f".worker-{self._index}.tmp"
        tmp.write_bytes(orjson.dumps({"ready": ready, "reason": reason, "at": self._clock()}))
        os.replace(tmp, self._path(self._index))

    async def run(self) -> None:
        """Publish every period until cancelled. A failed write is logged and tried again: the
        others read a missing report as not ready, which is what such a worker is."""
        while True:
            try:
                self.publish()
            except OSError as exc:
                log.warning("worker %d cannot publish its readiness: %s", self._index, exc)
            await asyncio.sleep(self._period_s)

    async def start(self) -> None:
        """Publish every period from now on (``run`` in a task of the running loop)."""
        self._publishing = asyncio.get_running_loop().create_task(self.run(), name="readiness")

    async def stop(self) -> None:
        """Stop publishing and remove this worker's report."""
        task, self._publishing = self._publishing, None
        if task is not None:
            await lifecycle.cancel(task)
        self.close()

    def _report(self, index: int) -> tuple[bool, str]:
        try:
            report = orjson.loads(self._path(index).read_bytes())
        except FileNotFoundError:
            return False, "not started"
        except (OSError, orjson.JSONDecodeError) as exc:
            return False, f"unreadable report: {exc}"
        age = self._clock() - float(report["at"])
        if age > STALE_AFTER_PERIODS * self._period_s:
            return False, f"no report for {age:.0f}s"
        return bool(report["ready"]), str(report["reason"])

    def __call__(self) -> tuple[bool, str]:
        not_ready: list[str] = []
        own_reason = ""
        for index in range(self._workers):
            ready, reason = self._own() if index == self._index else self._report(index)
            if index == self._index:
                own_reason = reason
            if not ready:
                not_ready.append(f"worker {index}: {reason}")
        if not_ready:
            return False, "; ".join(not_ready)
        return True, f"{self._workers} workers ready ({own_reason})"

    def close(self) -> None:
        """Leave no report behind: a stopped worker must read as not started, not as ready."""
        with contextlib.suppress(FileNotFoundError):
            self._path(self._index).unlink()
