"""The one path every Export request takes, whatever transport brought it.

Receivers decode their protocol (HTTP body, gRPC message bytes) into an uncompressed body and
call ``Ingest.ingest`` with the body's encoding (``receivers.encodings``: protobuf or OTLP/JSON,
chosen once per request); it answers with an ``Outcome`` that each receiver renders in its own form
(HTTP status + body, gRPC status + metadata). Keeping tenancy, limits, enrichment, batching and
counting here means the two receivers cannot drift apart in what they accept or refuse.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from bus.contract import Batch, BusUnavailable
from gateway import correlation, metrics
from gateway.batcher import Batcher
from gateway.receivers.encodings import PROTOBUF, Encoding
from gateway.tenancy import Authenticator, AuthError, RateLimiter
from otlp import wire
from otlp.signals import ATTR_CORRELATION, ATTR_TENANT, CORRELATION_HEADER, Signal
from settings.config import Config

log = logging.getLogger(__name__)

# Why a request was refused; also the ``reason`` label of the refusal metrics.
Reason = Literal[
    "unauthenticated", "rate_limited", "malformed", "too_large", "unsupported_media_type",
    "bus_unavailable", "overloaded", "shutting_down", "not_found", "method_not_allowed",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request, independent of how it will be said on the wire."""

    correlation_id: str
    refused: Reason | None = None
    message: str = ""
    rejected_items: int = 0  # accepted request with partial success when > 0
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None


class Ingest:
    """Tenant -> enrich and count -> rate limit -> batch -> (durable) ack."""

    def __init__(self, cfg: Config, batcher: Batcher, authenticator: Authenticator,
                 limiter: RateLimiter, *, max_item_bytes: int | None = None) -> None:
        self._durable = cfg.ack == "durable"
        self._max_item_bytes = max_item_bytes
        self._max_inflight = cfg.server.max_concurrent_requests
        self._max_pending_bytes = cfg.batch.max_pending_bytes
        self._max_items = cfg.server.max_items_per_request
        self._batcher = batcher
        self._auth = authenticator
        self._limiter = limiter
        self.inflight = 0
        self._closing = False

    def close_intake(self) -> None:
        """Refuse new requests (503, retry elsewhere) and hand every open batch to the bus.

        Between the closing check and ``batcher.add`` nothing awaits, so once this returns every
        request already admitted is in a batch being published: requests in flight get their
        answer without waiting for the batch age, and nothing new joins after the flush.
        """
        self._closing = True
        self._batcher.flush_all()

    def correlation_id(self, headers: Mapping[str, str]) -> str:
        """The client's valid ``x-correlation-id`` or a new one; receivers echo it back."""
        return correlation.accept(headers.get(CORRELATION_HEADER)) or correlation.new_id()

    def refuse(self, signal: Signal | None, transport: str, reason: Reason, message: str,
               correlation_id: str, *, items: int = 0, retry_after_s: float | None = None) -> Outcome:
        """Count a refusal and describe it; receivers use it for protocol-level refusals too.

        ``signal`` is None for requests to no known signal (HTTP 404): labelled ``unknown``.
        """
        label = signal.value if signal is not None else "unknown"
        metrics.refused_requests.labels(label, transport, reason).inc()
        if items:
            metrics.refused_items.labels(label, reason).inc(items)
        return Outcome(correlation_id, refused=reason, message=message, retry_after_s=retry_after_s)

    def admit(self, signal: Signal, transport: str, cid: str) -> Outcome | None:
        """The refusal (counted) if the gateway cannot take a request now, else None.

        Receivers may call it before decoding a body, so an overloaded gateway refuses cheaply;
        ``ingest`` checks again. The pending-bytes budget is what bounds memory with
        ``ack: accepted``, where requests are answered before their batch is published; it is
        checked only here, so one admitted request may take the batcher past it.
        """
        if self._closing:
            return self.refuse(signal, transport, "shutting_down", "gateway is shutting down", cid,
                               retry_after_s=1.0)
        if self.inflight >= self._max_inflight:
            return self.refuse(signal, transport, "overloaded", "too many concurrent requests", cid,
                               retry_after_s=1.0)
        if self._batcher.pending_bytes >= self._max_pending_bytes:
            return self.refuse(signal, transport, "overloaded", "too much data waiting for the bus", cid,
                               retry_after_s=1.0)
        return None

    async def ingest(self, signal: Signal, transport: str, headers: Mapping[str, str], payload: bytes,
                     correlation_id: str | None = None, *, encoding: Encoding = PROTOBUF,
                     client_names: tuple[str, ...] = ()) -> Outcome:
        """Handle one Export request, decompressed, in ``encoding``. ``headers`` keys are lower case;
        ``client_names``: the verified client certificate's CN and SANs (mTLS), else empty."""
        cid = correlation_id or self.correlation_id(headers)
        refused = self.admit(signal, transport, cid)
        if refused is not None:
            return refused
        self.inflight += 1
        gauge = metrics.inflight_requests.labels(transport)
        gauge.inc()
        started = time.perf_counter()
        try:
            return await self._ingest(signal, transport, headers, payload, cid, encoding, client_names)
        finally:
            self.inflight -= 1
            gauge.dec()
            metrics.request_seconds.labels(signal.value, transport).observe(time.perf_counter() - started)

    async def _ingest(self, signal: Signal, transport: str, headers: Mapping[str, str], payload: bytes,
                      cid: str, encoding: Encoding, client_names: tuple[str, ...]) -> Outcome:
        try:
            tenant = self._auth.tenant_for(headers, client_names)
        except AuthError as exc:
            return self.refuse(signal, transport, "unauthenticated", str(exc) or "unauthenticated", cid)
        attrs = ((ATTR_TENANT, tenant), (ATTR_CORRELATION, cid))
        work = functools.partial(encoding.prepare, signal, payload, attrs, self._max_items)
        try:
            if len(payload) > encoding.offload_bytes:
                # Walking and checking megabytes takes tens of ms (JSON: a 400 KB request 13 ms);
                # in a thread the loop gets the GIL back every switch interval (5 ms), so other
                # clients keep being served.
                prepared = await asyncio.get_running_loop().run_in_executor(_heavy_work(), work)
            else:
                prepared = work()
        except wire.TooManyItems as exc:
            # Counting stopped at the limit: the request held at least ``exc.items`` items (0 for
            # an OTLP/JSON body refused on its object count, before any item was counted).
            return self.refuse(signal, transport, "too_large", f"{exc} (server.max_items_per_request)", cid,
                               items=exc.items)
        except wire.WireError as exc:
            return self.refuse(signal, transport, "malformed", str(exc), cid)
        if not prepared.items and (prepared.rejected_items or prepared.error):
            # Nothing in it can be delivered: the OTLP answer is 400, not an OK that accepts nothing.
            return self.refuse(signal, transport, "malformed", prepared.error, cid,
                               items=prepared.rejected_items)
        if prepared.rejected_items:
            metrics.refused_items.labels(signal.value, "malformed").inc(prepared.rejected_items)
        if self._max_item_bytes is not None and len(prepared.payload) > self._max_item_bytes:
            prepared, oversized = _without_oversized_items(signal, prepared, self._max_item_bytes)
            if oversized and not prepared.items:
                return self.refuse(signal, transport, "too_large", prepared.error, cid, items=oversized)
            if oversized:
                metrics.refused_items.labels(signal.value, "too_large").inc(oversized)
        retry = self._limiter.admit(tenant, prepared.items, len(payload))
        if retry is not None:
            return self.refuse(signal, transport, "rate_limited", f"tenant {tenant!r} is over its rate limit",
                               cid, items=prepared.items, retry_after_s=retry)
        if prepared.items:
            fut = self._batcher.add(signal, tenant, prepared.payload, prepared.items, cid)
            if self._durable:
                try:
                    # shield: a client that goes away must not cancel the batch others wait on.
                    await asyncio.shield(fut)
                except BusUnavailable as exc:
                    return self.refuse(signal, transport, "bus_unavailable", f"bus unavailable: {exc}", cid,
                                       items=prepared.items, retry_after_s=exc.retry_after_s)
            else:
                fut.add_done_callback(functools.partial(_count_lost, signal, prepared.items))
            metrics.received_items.labels(signal.value, transport, tenant).inc(prepared.items)
            metrics.received_bytes.labels(signal.value, transport, tenant).inc(len(payload))
        return Outcome(cid, rejected_items=prepared.rejected_items, message=prepared.error or "")


# Requests larger than their encoding's ``offload_bytes`` are prepared in a worker thread (one,
# so that heavy requests queue behind each other instead of taking the GIL from the loop together).
_HEAVY: list[ThreadPoolExecutor] = []


def _heavy_work() -> ThreadPoolExecutor:
    if not _HEAVY:
        _HEAVY.append(ThreadPoolExecutor(1, thread_name_prefix="tg-prepare"))
    return _HEAVY[0]


def _without_oversized_items(signal: Signal, prepared: wire.Prepared,
                             limit: int) -> tuple[wire.Prepared, int]:
    """Drop the items the bus can never carry, keeping the rest as a partial success.

    Only requests larger than the limit come here, so the common path pays one length check.
    """
    kept: list[bytes] = []
    dropped = 0
    for piece in wire.split(signal, prepared.payload, limit):
        if len(piece) <= limit:
            kept.append(piece)
        else:
            dropped += wire.prepare(signal, piece, (), check=False).items
    if not dropped:
        return prepared, 0
    message = f"{dropped} item(s) larger than the bus limit of {limit} bytes each were refused"
    if prepared.error:
        message = f"{prepared.error}; {message}"
    rejected = prepared.rejected_items + dropped
    return wire.Prepared(b"".join(kept), prepared.items - dropped, rejected, message), dropped


def _count_lost(signal: Signal, items: int, fut: asyncio.Future[object]) -> None:
    """In ``ack: accepted`` mode nobody awaits the flush; a lost batch must still be counted."""
    if fut.cancelled() or fut.exception() is not None:
        metrics.refused_items.labels(signal.value, "lost_after_ack").inc(items)
        log.error("%d %s item(s) lost after they were acknowledged (ack: accepted): %s", items,
                  signal.value, "cancelled" if fut.cancelled() else fut.exception())


def observe_flush(batch: Batch, seconds: float) -> None:
    """Batcher ``on_flush`` hook: size and latency of every publish."""
    metrics.batch_bytes.labels(batch.signal.value).observe(len(batch.payload))
    metrics.batch_items.labels(batch.signal.value).observe(batch.items)
    metrics.flush_seconds.labels(batch.signal.value).observe(seconds)
