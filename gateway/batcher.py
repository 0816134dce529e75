"""Group requests by (signal, tenant) into bus-sized batches: latency that follows load.

Concatenating serialized Export requests yields a valid request (docs/architecture.md principle 1), so a
batch is just a join of payloads; nothing is decoded here. Each ``add`` returns a future that
settles when the batch holding that payload was published, which is how a receiver answers
only after the bus acknowledged (``ack: durable``) or turns a bus failure into 503.

Group commit (database group commit; Martin Thompson's "smart batching"): a request
for a (signal, tenant) with nothing being published waits for no timer; its batch is flushed
in the next loop turn, so requests that arrived in the same turn share it. While
``max_inflight_per_key`` (``batch.max_inflight_per_key``, default 1) publishes of that key are in
flight, what arrives gathers in one open batch that is flushed the moment one of them completes.
So at low load a request waits only for its own publish, and under load batches grow with the
bus's round trip. ``max_bytes`` and ``max_age_s`` are caps, not the normal path: a full batch, or
one that waited ``max_age_s`` behind a slow publish, is flushed even while its key is busy.

Ordering: with one publish per key in flight, a key's batches reach the bus in the order they were
flushed. With more, a later batch's publish can enqueue its messages before an earlier one's
(whose ``send`` still waits for topic metadata or producer buffer space), so one partition may
hold them out of order. The producer itself never reorders: it is idempotent and aiokafka sends
one produce request per broker at a time (``bus/kafka/client.py``).

Publishes run as tasks so a slow publish does not stop the next batch from filling, but at
most ``max_inflight`` at once over all keys: beyond that, flushed batches queue on the semaphore. In
``ack: accepted`` mode (and for durable requests whose client went away) no request waits on
those, so ``pending_bytes`` counts every byte from ``add`` until its publish ended and ``Ingest``
refuses new requests while it is over ``batch.max_pending_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bus.contract import Batch, BusUnavailable
from gateway import metrics
from otlp.signals import Signal
from settings.config import BatchConfig

__all__ = ["Batcher", "batcher_for"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Open:
    """A batch being filled."""

    payloads: list[bytes] = field(default_factory=list)
    size: int = 0
    items: int = 0
    correlation_ids: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)
    # The flush scheduled for it: next loop turn (key idle) or after max_age (key busy).
    timer: asyncio.Handle | None = None


class Batcher:
    """Open batches per (signal, tenant), so every bus message holds one tenant (docs/architecture.md
    principle 2). ``on_flush(batch, seconds)`` observes each successful publish and
    ``on_error(batch, exc)`` each failed one, for metrics; ``max_inflight`` bounds concurrent
    publishes over all keys, ``max_inflight_per_key`` the publishes of one (signal, tenant)
    beyond which arriving requests gather for the next batch instead of flushing at once.
    ``max_bytes`` (bytes of payload) and ``max_age_s`` (seconds) cap a batch's size and wait.

    Raises ``ValueError`` for a non-positive size or bound, or a negative age."""

    def __init__(self, publish: Callable[[Batch], Awaitable[None]], max_bytes: int, max_age_s: float,
                 on_flush: Callable[[Batch, float], None] | None = None, *, max_inflight: int = 8,
                 max_inflight_per_key: int = 1,
                 on_error: Callable[[Batch, BaseException], None] | None = None) -> None:
        if max_bytes <= 0 or max_age_s < 0 or max_inflight <= 0 or max_inflight_per_key <= 0:
            raise ValueError("max_bytes, max_inflight and max_inflight_per_key must be > 0, max_age_s >= 0")
        self._publish = publish
        self._max_bytes = max_bytes
        self._max_age = max_age_s
        self._on_flush = on_flush
        self._on_error = on_error
        self._open: dict[tuple[Signal, str], _Open] = {}
        self._per_key = max_inflight_per_key
        # Publishes in flight (flushed, not yet finished) per key; a key at 0 is absent.
        self._busy: dict[tuple[Signal, str], int] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_inflight)
        self._pending_bytes = 0
        self._pending_items = 0
        self._closed = False

    @property
    def pending_bytes(self) -> int:
        """Bytes held here until their publish ended: open batches, batches waiting for a
        publish slot and batches being published."""
        return self._pending_bytes

    @property
    def pending_items(self) -> int:
        return self._pending_items

    def add(self, signal: Signal, tenant: str, payload: bytes, items: int,
            correlation_id: str) -> asyncio.Future[None]:
        """Queue one enriched request; the future settles when its batch was published."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        key = (signal, tenant)
        size = len(payload)
        current = self._open.get(key)
        if current is not None and current.size + size > self._max_bytes:
            self._flush(key)
            current = None
        if current is None:
            current = self._open[key] = _Open()
            if self._busy.get(key, 0) < self._per_key:
                # Next loop turn rather than now: requests that arrived together share the batch.
                current.timer = loop.call_soon(self._flush, key)
            else:
                current.timer = loop.call_later(self._max_age, self._flush, key)
        current.payloads.append(payload)
        current.size += size
        current.items += items
        current.correlation_ids.append(correlation_id)
        current.futures.append(fut)
        self._pending_bytes += size
        self._pending_items += items
        if current.size >= self._max_bytes:
            self._flush(key)
        return fut

    def _flush(self, key: tuple[Signal, str]) -> None:
        current = self._open.pop(key, None)
        if current is None:
            return
        if current.timer is not None:
            current.timer.cancel()
        signal, tenant = key
        batch = Batch(signal, tenant, b"".join(current.payloads), current.items, current.correlation_ids)
        futures = current.futures
        self._busy[key] = self._busy.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._send(batch, futures))
        self._inflight.add(task)
        task.add_done_callback(lambda t: self._finished(t, key, batch, futures))

    def _finished(self, task: asyncio.Task[None], key: tuple[Signal, str], batch: Batch,
                  futures: list[asyncio.Future[None]]) -> None:
        """Free the key's publish slot and send what gathered behind it as the next batch.

        A task cancelled before it ran never entered ``_send``, which settles every future and
        releases the batch's bytes: do both here, or the bytes would count against the pending
        budget for ever and the requests would never get an answer."""
        self._inflight.discard(task)
        busy = self._busy[key] - 1
        if busy:
            self._busy[key] = busy
        else:
            del self._busy[key]
        if not all(fut.done() for fut in futures):
            self._pending_bytes -= len(batch.payload)
            self._pending_items -= batch.items
            self._fail(batch, futures, BusUnavailable("publish cancelled: the gateway is stopping"))
        if key in self._open and busy < self._per_key:
            self._flush(key)

    async def _send(self, batch: Batch, futures: list[asyncio.Future[None]]) -> None:
        try:
            async with self._slots:
                started = time.perf_counter()
                await self._publish(batch)
                took = time.perf_counter() - started
        except BusUnavailable as e:
            self._fail(batch, futures, e)
        except Exception as e:
            # A bus bug or an error it did not translate: still the client's retryable 503, not
            # a 500/UNKNOWN; the traceback goes to the log once per batch, not once per request.
            log.exception("publishing %d %s item(s) of tenant %r failed", batch.items, batch.signal.value,
                          batch.tenant)
            metrics.publish_errors.labels(batch.signal.value, type(e).__name__).inc()
            self._fail(batch, futures, BusUnavailable(f"publish failed: {type(e).__name__}: {e}"))
        except asyncio.CancelledError:
            # Shutdown cancelled the publish: the requests get a retryable answer, not a hang.
            self._fail(batch, futures, BusUnavailable("publish cancelled: the gateway is stopping"))
            raise
        else:
            if self._on_flush is not None:
                self._on_flush(batch, took)
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
        finally:
            self._pending_bytes -= len(batch.payload)
            self._pending_items -= batch.items

    def _fail(self, batch: Batch, futures: list[asyncio.Future[None]], exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(batch, exc)
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)

    def flush_all(self) -> None:
        """Hand every open batch to the bus now (shutdown, or tests)."""
        for key in list(self._open):
            self._flush(key)

    async def close(self) -> None:
        """Flush everything pending and wait until every publish has finished."""
        self._closed = True
        self.flush_all()
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)


def batcher_for(cfg: BatchConfig, publish: Callable[[Batch], Awaitable[None]],
                on_flush: Callable[[Batch, float], None] | None = None) -> Batcher:
    """The gateway's batcher as ``batch`` configures it: ``max_bytes``, ``max_age_ms`` (in ms, as
    configured) and ``max_inflight_per_key``; ``settings.config.load`` has validated them."""
    return Batcher(publish, cfg.max_bytes, cfg.max_age_ms / 1000, on_flush,
                   max_inflight_per_key=cfg.max_inflight_per_key)
