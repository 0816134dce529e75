"""One source feeding one sink: read, write, and commit only after the sink acknowledged.

This loop is shared by the embedded gateway (MemoryBus -> file sink) and the Kafka pipelines
runner, so at-least-once behaviour is the same code in both.

Work overlaps, bounded: while the sink writes batch N, the next batch is polled and, for a
sink that splits its write (``PreparingSink``: ``prepare`` converts, ``send`` writes), already
converted, so the CPU work of N+1 fills the time the worker would spend waiting for the store.
At most one batch is held ahead. Writes stay one at a time and in poll order (a store that
refuses out-of-order samples sees them in order), and offsets are committed in that order,
each batch only after its write was acknowledged. The batch held ahead is not committed when
the pipeline stops: Kafka redelivers it to the partition's next owner.

While the sink fails transiently the same records are retried with exponential backoff
(``runtime.backoff``; longer when the store says how long with Retry-After) and a
source that can pause (Kafka) is paused, so nothing new is fetched and the consumer group keeps
the member. Records the sink rejects for good go to the dead-letter callback (a Kafka topic in
the runner, the rejects files of the embedded file sink) and are then committed: one poison
record must not stop the pipeline.

An error the sink did not classify (any other exception: a converter bug, a crashed helper) is
retried ``max_unexpected_retries`` times with backoff; then the records still pending are written
one at a time, each with the same budget, and a record that still fails goes to the dead letters
with the error as the reason. So no record, whatever it holds, stalls the pipeline for more than
a few backoffs. A sink that raises such an error must have written none of the records it was
given (what a partial write settled it names in TransientSinkError), so retrying never writes a
record twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bus.contract import BusRecord, Source
from pipelines.metrics import ACKED_RECORDS, DEAD_LETTER_RECORDS, ISOLATED_BATCHES, SINK_ERRORS
from pipelines.sinks.base import (
    PermanentSinkError,
    PreparingSink,
    Rejection,
    Sink,
    TransientSinkError,
    prepare_for,
    send_prepared,
)
from runtime.backoff import Backoff

log = logging.getLogger(__name__)

_KEEPALIVE_S = 1.0  # while backing off, a paused source polls its group at least this often

DeadLetter = Callable[[Sequence[Rejection]], Awaitable[None]]


@runtime_checkable
class PausableSource(Protocol):
    """A source that can stop fetching while the sink is down, and stay in its group meanwhile."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def keepalive(self) -> None: ...


class _Stopped(Exception):
    """Stop was asked while the batch in hand could not be delivered: leave it uncommitted."""


@dataclass
class _InHand:
    """A fetched batch on its way through the sink: what is left to write, what was refused.

    ``prepared``: what the sink prepared for the whole batch, used by the first attempt only
    (a retry sends what is left through ``write``).
    """

    pending: list[BusRecord]
    rejected: list[Rejection] = field(default_factory=list)
    prepared: Any = None


@dataclass
class _Polled:
    """A polled batch and the task preparing it (None for a sink that does not prepare)."""

    records: Sequence[BusRecord]
    preparing: asyncio.Task[Any] | None


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
        max_unexpected_retries: int = 3,
        backoff: Backoff | None = None,
        read_ahead: bool = True,
    ) -> None:
        """``backoff``: between retries of a write (default: ``backoff_initial_s`` doubling up to
        ``backoff_max_s``); reset for every write. ``read_ahead``: poll (and prepare) the next
        batch while the current one is written; False: poll, write, commit strictly in turn."""
        self.source = source
        self.sink = sink
        self._dead_letter = dead_letter
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff = backoff or Backoff(backoff_initial_s, max(backoff_max_s, backoff_initial_s))
        self._max_unexpected_retries = max_unexpected_retries
        self._read_ahead = read_ahead
        self._prepares = isinstance(sink, PreparingSink)
        self._stopping = asyncio.Event()
        self._paused = False
        # One poll at a time: the poll ahead and a paused source's keepalive both poll.
        self._polling = asyncio.Lock()
        self.written = 0
        self.dead_lettered = 0
        self._acked = ACKED_RECORDS.labels(sink.name)
        self._dead = DEAD_LETTER_RECORDS.labels(sink.name)

    def stop(self) -> None:
        """Finish the batch in hand (written and committed), then return from ``run``.

        If the sink is failing at that moment the batch is left uncommitted and will be
        redelivered to the next consumer, rather than holding shutdown hostage.
        """
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()``; the batch in hand is finished (written and committed) first."""
        ahead: _Polled | None = None
        try:
            while not self._stopping.is_set():
                polled = ahead if ahead is not None else await self._poll()
                ahead = None
                if polled is None:
                    continue
                delivery = asyncio.ensure_future(self._deliver(polled))
                try:
                    if self._read_ahead:
                        ahead = await self._poll_during(delivery)
                    await delivery
                except _Stopped:
                    log.warning("sink %s: stopping with %d undelivered record(s); they stay uncommitted",
                                self.sink.name, len(polled.records))
                    return
                finally:
                    if not delivery.done():  # this task was cancelled: so is its write
                        delivery.cancel()
                await self.source.commit(polled.records)
        finally:
            if ahead is not None and ahead.preparing is not None:
                ahead.preparing.cancel()

    async def _poll(self) -> _Polled | None:
        """The next batch (None when the poll found nothing), its preparation started."""
        async with self._polling:
            records = await self.source.getmany(self._poll_timeout_ms, self._max_records)
        if not records:
            return None
        preparing = None
        if self._prepares:
            preparing = asyncio.ensure_future(prepare_for(self.sink, records))
            # A preparation dropped at stop is never awaited: take its error so none is reported.
            preparing.add_done_callback(lambda t: t.cancelled() or t.exception())
        return _Polled(records, preparing)

    async def _poll_during(self, delivery: asyncio.Future[None]) -> _Polled | None:
        """Poll the next batch while ``delivery`` writes the current one; None if none came first.

        Not while the write is failing: the source is paused then, and the write's backoff
        keeps it in its group.
        """
        while not delivery.done() and not self._stopping.is_set():
            if self._paused:
                await asyncio.wait((delivery,))
                return None
            polled = await self._poll()
            if polled is not None:
                return polled
        return None

    async def _prepared(self, polled: _Polled) -> Any:
        """What the sink prepared for ``polled``; None when it prepares nothing or failed to."""
        if polled.preparing is None:
            return None
        try:
            return await polled.preparing
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Writing through ``write`` meets the same error where retries, isolation and dead
            # letters handle it; the preparation only saved time.
            log.debug("sink %s: preparing a batch failed (%s); writing it as it is", self.sink.name, exc)
            return None

    async def _deliver(self, polled: _Polled) -> None:
        """Write until every record is written or rejected, then park the rejected ones."""
        batch = _InHand(list(polled.records), prepared=await self._prepared(polled))
        try:
            await self._write_all(batch)
            if batch.rejected:
                await self._retrying(lambda: self._park(batch))
        finally:
            self._resume()

    async def _write_all(self, batch: _InHand) -> None:
        """Write ``batch`` until every record is written or rejected; isolate on repeated bugs."""
        failure = await self._attempts(batch)
        if failure is None:
            return
        if len(batch.pending) > 1:
            ISOLATED_BATCHES.labels(self.sink.name).inc()
            log.warning("sink %s: %d record(s) keep failing together; writing them one at a time",
                        self.sink.name, len(batch.pending))
            alone, batch.pending = [_InHand([r]) for r in batch.pending], []
            for one in alone:
                failed = await self._attempts(one)
                batch.rejected.extend(one.rejected)
                if failed is not None:
                    batch.rejected.append(self._give_up(one.pending[0], failed))
        else:
            batch.rejected.append(self._give_up(batch.pending[0], failure))
            batch.pending = []

    async def _attempts(self, batch: _InHand) -> Exception | None:
        return await self._retrying(lambda: self._write(batch), self._max_unexpected_retries)

    def _give_up(self, record: BusRecord, failure: Exception) -> Rejection:
        SINK_ERRORS.labels(self.sink.name, "gave_up").inc()
        reason = (f"unexpected sink error, {self._max_unexpected_retries + 1} attempts: "
                  f"{type(failure).__name__}: {failure}")
        log.error("sink %s: giving up on %s/%d@%d: %s", self.sink.name, record.topic, record.partition,
                  record.offset, reason)
        return Rejection(record, reason)

    def _pause(self) -> None:
        if not self._paused and isinstance(self.source, PausableSource):
            self.source.pause()
            self._paused = True

    def _resume(self) -> None:
        if self._paused and isinstance(self.source, PausableSource):
            self.source.resume()
        self._paused = False

    async def _write(self, batch: _InHand) -> None:
        if not batch.pending:  # a failed attempt settled everything it had
            return
        prepared, batch.prepared = batch.prepared, None  # for one attempt: a retry writes what is left
        try:
            await send_prepared(self.sink, batch.pending, prepared)
        except TransientSinkError as exc:
            self._settle(batch, exc.written, exc.rejected)
            raise
        except PermanentSinkError as exc:
            refused = {id(rej.record) for rej in exc.rejected}
            self._settle(batch, [r for r in batch.pending if id(r) not in refused], exc.rejected)
            return
        self._settle(batch, batch.pending, ())

    def _settle(self, batch: _InHand, written: Sequence[BusRecord], rejected: Sequence[Rejection]) -> None:
        """Take what the sink finished out of the batch, so a retry sends only the rest."""
        done = {id(r) for r in written} | {id(rej.record) for rej in rejected}
        batch.pending = [r for r in batch.pending if id(r) not in done]
        batch.rejected.extend(rejected)
        if rejected:
            SINK_ERRORS.labels(self.sink.name, "permanent").inc()
        self.written += len(written)
        self._acked.inc(len(written))

    async def _park(self, batch: _InHand) -> None:
        """Hand ``batch.rejected`` to the dead letters; on a partial failure keep only the rest."""
        rejected = batch.rejected
        if self._dead_letter is None:
            for rej in rejected:
                log.error("sink %s rejected %s/%d@%d: %s", self.sink.name, rej.record.topic,
                          rej.record.partition, rej.record.offset, rej.reason)
        else:
            try:
                await self._dead_letter(rejected)
            except TransientSinkError as exc:
                parked = {id(r) for r in exc.written}
                batch.rejected = [rej for rej in rejected if id(rej.record) not in parked]
                self._count_parked(len(rejected) - len(batch.rejected))
                raise
        batch.rejected = []
        self._count_parked(len(rejected))

    def _count_parked(self, n: int) -> None:
        self.dead_lettered += n
        self._dead.inc(n)

    async def _retrying(self, attempt: Callable[[], Awaitable[None]],
                        max_unexpected: int | None = None) -> Exception | None:
        """Run ``attempt`` until it succeeds (None), backing off on every failure but a stop.

        Transient errors are retried for ever; unexpected ones up to ``max_unexpected`` times
        (None: for ever), after which the last one is returned.
        """
        unexpected = 0
        self._backoff.reset()
        while True:
            try:
                await attempt()
                return None
            except TransientSinkError as exc:
                SINK_ERRORS.labels(self.sink.name, "transient").inc()
                delay = self._delay(exc)
                log.warning("sink %s: transient error, retrying in %.1fs: %s", self.sink.name, delay, exc)
            except (_Stopped, asyncio.CancelledError):
                raise
            except Exception as exc:
                # A sink bug or an error it did not classify: retried (it may pass), but only so
                # often where a budget is given, or one record that always trips it would hold
                # up everything behind it.
                SINK_ERRORS.labels(self.sink.name, "unexpected").inc()
                unexpected += 1
                if max_unexpected is not None and unexpected > max_unexpected:
                    log.error("sink %s: unexpected error on attempt %d, giving up on this write: %s",
                              self.sink.name, unexpected, exc)
                    return exc
                delay = self._backoff.next_delay()
                log.exception("sink %s: unexpected error, retrying in %.1fs", self.sink.name, delay)
            self._pause()
            await self._wait(delay)

    def _delay(self, exc: TransientSinkError) -> float:
        """The next backoff, or longer when the store asked for it (Retry-After, RetryInfo)."""
        delay = self._backoff.next_delay()
        asked = getattr(exc, "retry_after_s", None)
        return max(delay, float(asked)) if asked is not None else delay

    async def _wait(self, delay: float) -> None:
        """Wait ``delay`` (keeping a paused source alive in its group); give up early on stop."""
        left = delay
        while left > 0:
            if self._stopping.is_set():
                raise _Stopped
            if self._paused and isinstance(self.source, PausableSource):
                async with self._polling:
                    await self.source.keepalive()
            step = min(left, _KEEPALIVE_S)
            if await self._backoff.sleep(self._stopping, delay=step):
                raise _Stopped
            left -= step
        if self._stopping.is_set():
            raise _Stopped
