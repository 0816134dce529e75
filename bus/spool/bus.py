"""SpoolBus: a write-ahead log on local disk in front of the bus it wraps (``SpoolBus(KafkaBus(...))``).

``publish`` returns once the batch is in the bus below (Kafka: acks=all) or fsynced in the
spool, so a client's OK always means one of the two. A drainer feeds the spool to the bus
below in order, one batch at a time per (signal, tenant) and up to ``replay_concurrency``
batches at once, retrying with backoff (never dropping) while it refuses; a segment file is
deleted only once every record in it was acknowledged below.

Modes (``spool.mode``):

- ``on_failure``: while no backlog exists a batch goes straight to the bus below, as without a
  spool; one whose publish fails or times out is spooled instead (the client still gets its
  OK), and while anything is spooled every new batch is spooled behind it, so a (signal,
  tenant) keeps its order. When the drainer has emptied the spool, batches go straight again.
- ``always``: every batch is spooled; the bus below is fed from the log only.

Full (``max_bytes``, free disk under ``min_free_bytes``, or the oldest record older than
``max_age_s``): a batch that would be spooled is refused with ``BusUnavailable`` (503 /
UNAVAILABLE with ``full_retry_after_ms`` as the hint), never dropped after its OK.

Duplicates: a batch whose straight publish failed part-way (timed out, or the connection broke
after sending) may be in the bus already, and is spooled and replayed all the same:
``gateway_spool_ambiguous_items_total`` counts those items, the bound on duplicates without a
crash. After a crash, a record handed below but not yet acknowledged, and records acknowledged
since the last ledger write (at most ``_LEDGER_PERIOD_S`` of them), are sent again;
``gateway_spool_recovered_records_total`` counts what a start found, the bound there. The
idempotent producer removes duplicates only within one producer session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from bus.contract import Batch, Bus, BusUnavailable
from bus.metrics import (
    SPOOL_AMBIGUOUS_ITEMS,
    SPOOL_APPENDED,
    SPOOL_APPENDED_BYTES,
    SPOOL_APPENDED_ITEMS,
    SPOOL_BYTES,
    SPOOL_MAX_BYTES,
    SPOOL_OLDEST_AGE,
    SPOOL_RECORDS,
    SPOOL_RECOVERED,
    SPOOL_REFUSED,
    SPOOL_REPLAY_ERRORS,
    SPOOL_REPLAYED,
    SPOOL_REPLAYED_BYTES,
    SPOOL_REPLAYED_ITEMS,
)
from bus.spool import log as fmt
from bus.spool.store import SpoolLog, claim, disk_free
from otlp.signals import Signal
from runtime.backoff import Backoff
from settings.config import Config, SpoolConfig

log = logging.getLogger(__name__)

_READ_BUDGET = 4 * 1024 * 1024
_LEDGER_PERIOD_S = 0.2
_GAUGE_PERIOD_S = 1.0
_DISK_CHECK_S = 1.0
# A record appended longer ago than this is backlog: its replay is paced (replay_max_bytes_per_s).
_BACKLOG_AGE_MS = 1000
# Records of one (signal, tenant) replayed together in one publish, up to this many payload bytes.
_MERGE_BYTES = 1024 * 1024

Key = tuple[Signal, str]


@dataclass
class _Lane:
    """The records of one (signal, tenant) read and not yet in the bus below, in order."""

    queue: deque[tuple[SpoolLog, fmt.Record]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class _Pacer:
    """A token bucket over bytes: ``take(n)`` waits until n bytes may go (0 rate: never waits)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    async def take(self, n: int) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self._rate)


class SpoolBus:
    """A Bus that spools to local disk what the bus below cannot take now (or everything)."""

    def __init__(self, cfg: SpoolConfig, inner: Bus, *, replay_dirs: list[Path] | None = None) -> None:
        """``replay_dirs``: take no new data, only drain these directories (``spool replay``)."""
        self._cfg = cfg
        self._inner = inner
        self._always = cfg.mode == "always"
        self._replay_dirs = replay_dirs
        self._replay_only = replay_dirs is not None
        self._base = Path(cfg.dir)
        self._own: SpoolLog | None = None
        self._adopted: list[SpoolLog] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes: dict[Key, _Lane] = {}
        self._window = asyncio.Semaphore(cfg.replay_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._direct: dict[Key, list[asyncio.Future[None]]] = {}
        self._pacer = _Pacer(cfg.replay_max_bytes_per_s)
        self._full_retry_s = cfg.full_retry_after_ms / 1000
        self._free = 1 << 62
        self._free_at = 0.0
        self._reason = "spool: not started"
        self._stopping = False
        self._refused_at = -1e9
        self._refused_why = ""
        self.drained = asyncio.Event()

    @property
    def max_item_bytes(self) -> int | None:
        return self._inner.max_item_bytes

    @property
    def logs(self) -> list[SpoolLog]:
        """Adopted directories first (older data), then this process's own."""
        return [*self._adopted, *([self._own] if self._own is not None else [])]

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._inner.start()
        own: SpoolLog | None
        if self._replay_dirs is not None:
            own, adopted = None, []
            for d in self._replay_dirs:
                spool = SpoolLog(d, writable=False, fsync=self._cfg.fsync)
                if not spool.lock():
                    raise OSError(f"{d} is held by a running gateway; it replays it itself")
                adopted.append(spool)
        else:
            own, adopted = await asyncio.to_thread(claim, self._base, fsync=self._cfg.fsync,
                                                   segment_bytes=self._cfg.segment_bytes)
        self._own = own
        for spool in [*adopted, *([own] if own is not None else [])]:
            rec = await spool.open()
            if rec.records:
                SPOOL_RECOVERED.inc(rec.records)
        self._adopted = adopted
        if adopted:
            log.warning("spool: adopted %s left by worker(s) that are gone; replaying them first",
                        ", ".join(str(a.dir) for a in adopted))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drain(), name="spool-drain"),
                       loop.create_task(self._housekeeping(), name="spool-ledger")]
        self._update_gauges()
        SPOOL_MAX_BYTES.set(self._cfg.max_bytes if own is not None else 0)
        if own is not None:
            log.info("spool: %s, mode %s, max %d bytes, fsync %s", own.dir, self._cfg.mode,
                     self._cfg.max_bytes, "on" if self._cfg.fsync else "off")

    async def stop(self) -> None:
        """Stop taking data, give the backlog a bounded chance to drain, stop draining, close."""
        self._stopping = True
        if self._backlog() and self._inner.readiness()[0] and not self._replay_only:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_drained(), self._cfg.stop_drain_ms / 1000)
        for task in self._tasks:
            task.cancel()
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
        self._tasks = []
        for spool in self.logs:
            await spool.close()
        left = sum(s.records for s in self.logs)
        if left:
            log.warning("spool: %d record(s) left in %s, replayed by the next start", left, self._base)
        self._update_gauges()
        await self._inner.stop()

    async def _wait_drained(self) -> None:
        while self._backlog():
            self.drained.clear()
            await self.drained.wait()

    def readiness(self) -> tuple[bool, str]:
        ready, reason = self._inner.readiness()
        own = self._own
        if own is None:
            return False, self._reason
        state = f"spool {sum(s.records for s in self.logs)} record(s), " \
                f"{sum(s.pending_bytes for s in self.logs)} bytes"
        if ready:
            return True, f"{reason}; {state}"
        full = self._full(1)
        if full is None and time.monotonic() - self._refused_at < max(1.0, self._full_retry_s):
            full = self._refused_why  # it refused a batch just now: no room for one more
        if full is not None:
            return False, f"spool {full}: {state}; {reason}"
        # The bus below is down but the spool absorbs it: the gateway is doing its job.
        return True, f"spool absorbing an outage of the bus: {reason}; {state}"

    # -- publishing ---------------------------------------------------------------------------
    def _backlog(self) -> bool:
        return any(s.backlog for s in self.logs)

    async def publish(self, batch: Batch) -> None:
        if self._always or self._backlog():
            await self._spool(batch)
            return
        key = (batch.signal, batch.tenant)
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        direct = self._direct.setdefault(key, [])
        direct.append(settled)
        try:
            await self._inner.publish(batch)
        except BusUnavailable as exc:
            log.debug("spool: the bus refused a batch (%s); spooling it", exc)
            await self._spool(batch, settled)
            if exc.__cause__ is not None:
                # It failed while being sent (not refused up front): the bus may hold it already.
                SPOOL_AMBIGUOUS_ITEMS.labels(batch.signal.value).inc(batch.items)
        finally:
            direct.remove(settled)
            if not settled.done():
                settled.set_result(None)
            if not direct:
                self._direct.pop(key, None)

    async def _spool(self, batch: Batch, settled: asyncio.Future[None] | None = None) -> None:
        own = self._own
        if own is None or self._replay_only or self._stopping:
            raise BusUnavailable("spool: not taking data (stopping)", self._full_retry_s)
        # A batch of the same (signal, tenant) tried straight before this one goes first.
        direct = self._direct.get((batch.signal, batch.tenant), [])
        ahead = direct[:direct.index(settled)] if settled in direct else list(direct)
        if ahead:
            await asyncio.gather(*ahead)
        full = self._full(len(batch.payload))
        if full is not None:
            self._refused_at, self._refused_why = time.monotonic(), full
            SPOOL_REFUSED.labels(full.split(":", 1)[0]).inc()
            raise BusUnavailable(f"spool full: {full}", self._full_retry_s)
        fut = own.append(batch)
        if settled is not None and not settled.done():
            settled.set_result(None)  # its place in the log is taken: later batches may follow
        try:
            await fut
        except OSError as exc:
            SPOOL_REFUSED.labels("write_error").inc()
            raise BusUnavailable(f"spool: write failed: {exc}", self._full_retry_s) from exc
        SPOOL_APPENDED.labels(batch.signal.value).inc()
        SPOOL_APPENDED_ITEMS.labels(batch.signal.value).inc(batch.items)
        SPOOL_APPENDED_BYTES.inc(len(batch.payload))

    def _full(self, adding: int = 0) -> str | None:
        """Why the spool cannot take ``adding`` more bytes now, or None."""
        own = self._own
        if own is None:
            return "not started"
        pending = sum(s.pending_bytes for s in self.logs)
        if pending + adding > self._cfg.max_bytes:
            return f"full: {pending} of spool.max_bytes {self._cfg.max_bytes}"
        now = time.monotonic()
        if now - self._free_at > _DISK_CHECK_S:
            self._free_at = now
            try:
                self._free = disk_free(own.dir)
            except OSError:
                self._free = 0
        if self._free - adding < self._cfg.min_free_bytes:
            return f"disk_floor: {self._free} bytes free, spool.min_free_bytes {self._cfg.min_free_bytes}"
        if self._cfg.max_age_s:
            age = self._oldest_age()
            if age > self._cfg.max_age_s:
                return f"max_age: oldest record {age:.0f}s old, spool.max_age_s {self._cfg.max_age_s:.0f}"
        return None

    def _oldest_age(self) -> float:
        oldest = [ms for s in self.logs if (ms := s.oldest_ms()) is not None]
        return max(0.0, time.time() - min(oldest) / 1000) if oldest else 0.0

    # -- draining -----------------------------------------------------------------------------
    async def _drain(self) -> None:
        """Read the logs in order and hand each record to its (signal, tenant) lane."""
        while True:
            spool = next((s for s in self.logs if s.unread()), None)
            if spool is None:
                self._settle_adopted()
                if not self._backlog():
                    self.drained.set()
                waits = [asyncio.ensure_future(s.readable.wait()) for s in self.logs]
                try:
                    await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                continue
            for rec, _token in await spool.read(_READ_BUDGET):
                await self._window.acquire()
                if int(time.time() * 1000) - rec.appended_ms > _BACKLOG_AGE_MS:
                    await self._pacer.take(len(rec.batch.payload))
                key = (rec.batch.signal, rec.batch.tenant)
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = _Lane()
                lane.queue.append((spool, rec))
                if lane.task is None or lane.task.done():
                    lane.task = asyncio.get_running_loop().create_task(self._run_lane(key, lane))
                    self._inflight.add(lane.task)
                    lane.task.add_done_callback(self._inflight.discard)

    async def _run_lane(self, key: Key, lane: _Lane) -> None:
        """Publish a (signal, tenant)'s records in order, each publish carrying every record
        queued behind the one before it (up to ``_MERGE_BYTES``): concatenated OTLP requests are
        one valid request, so a backlog of small batches replays in few round trips."""
        while lane.queue:
            taken = [lane.queue.popleft()]
            size = len(taken[0][1].batch.payload)
            while lane.queue and size + len(lane.queue[0][1].batch.payload) <= _MERGE_BYTES:
                size += len(lane.queue[0][1].batch.payload)
                taken.append(lane.queue.popleft())
            batches = [rec.batch for _, rec in taken]
            batch = batches[0] if len(batches) == 1 else Batch(
                key[0], key[1], b"".join(b.payload for b in batches), sum(b.items for b in batches),
                [c for b in batches for c in b.correlation_ids])
            try:
                await self._publish_until_taken(batch)
            finally:
                for _ in taken:
                    self._window.release()
            for spool, rec in taken:
                spool.ack(rec)
            SPOOL_REPLAYED.labels(batch.signal.value).inc(len(taken))
            SPOOL_REPLAYED_ITEMS.labels(batch.signal.value).inc(batch.items)
            SPOOL_REPLAYED_BYTES.inc(len(batch.payload))
        if self._lanes.get(key) is lane and not lane.queue:
            del self._lanes[key]
        if not self._backlog():
            self.drained.set()

    async def _publish_until_taken(self, batch: Batch) -> None:
        """Publish to the bus below, retrying with backoff until it takes the batch (never dropped)."""
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        while True:
            try:
                await self._inner.publish(batch)
                return
            except Exception as exc:  # BusUnavailable, or a bug below: never drop, retry
                SPOOL_REPLAY_ERRORS.inc()
                delay = backoff.next_delay()
                if backoff.failures == 1 or backoff.failures % 20 == 0:
                    log.warning("spool: replay waits for the bus (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def _settle_adopted(self) -> None:
        """An adopted directory wholly acknowledged: remove its files and let go of it."""
        for spool in list(self._adopted):
            if not spool.records and not spool.unread():
                spool.drop_empty_tail()
                self._adopted.remove(spool)
                task = asyncio.get_running_loop().create_task(spool.close())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                log.info("spool: adopted %s replayed in full", spool.dir)

    async def _housekeeping(self) -> None:
        last_gauges = 0.0
        while True:
            await asyncio.sleep(_LEDGER_PERIOD_S)
            for spool in self.logs:
                try:
                    await spool.write_ledger()
                except OSError as exc:
                    log.warning("spool %s: cannot write the ledger: %s", spool.dir, exc)
            if time.monotonic() - last_gauges >= _GAUGE_PERIOD_S:
                last_gauges = time.monotonic()
                self._update_gauges()

    def _update_gauges(self) -> None:
        SPOOL_BYTES.set(sum(s.pending_bytes for s in self.logs))
        SPOOL_RECORDS.set(sum(s.records for s in self.logs))
        SPOOL_OLDEST_AGE.set(self._oldest_age())


def stage(cfg: Config, inner: Bus) -> Bus:
    """The ``bus.factory`` stage: ``SpoolBus(inner)`` unless ``spool.mode`` is off."""
    if cfg.spool.mode == "off":
        return inner
    return SpoolBus(cfg.spool, inner)
