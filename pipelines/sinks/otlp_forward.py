"""What the OTLP forwarding sinks share, whatever the transport (``otlp_grpc``, ``otlp_http``).

A Kafka message value already is a serialized Export request (plain OTLP on the bus), and
concatenated requests are a valid request, so these sinks never decode the data on the way:
they join consecutive records of one signal and tenant up to ``max_request_bytes`` and send the
bytes as they are. A transport only says how one request goes out and what its answer means
(``_export``, through the shared classifiers in ``pipelines.sinks.answers``); the rest is here:

- ``RETRY`` (store down, busy, misconfigured): ``TransientSinkError`` naming the records that
  did go through, so the pipeline's retry skips them (OTLP stores such as Jaeger do not
  deduplicate). A ``Retry-After``/``RetryInfo`` is honoured: no request leaves before it.
- ``REJECT`` (the data is refused; OTLP says nothing of it was kept): a joined request is split
  per record; a record refused alone is split in its parts. Parts that do not decode here
  (``pipelines.convert.parts``) are rejected at once, the rest is sent by halves down to single
  items (with their resource and scope), so only what the store refuses is dead-lettered, as a
  ``Rejection.part``. Should the store stop answering half-way, the rest of the record is sent
  again after short waits (about 7.5 s in all), then dead-lettered with that reason: the part
  already stored must not be sent twice, which a pipeline retry of the record would do.
- ``validate``: records are decoded before they are sent, and a record that does not decode
  sends only its parts that do, for stores that are not atomic about a refused request.
- A partial success (``partial_success.rejected_*`` > 0) is not retried (the OTLP spec forbids
  it: the rest was stored). The count goes to ``pipeline_otlp_rejected_items_total``; when the
  store rejected every item of the request (or the request was one item), the records are
  dead-lettered with the store's message. Which items of a larger request it kept, the answer
  does not say, so those are only counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from bus.contract import BusRecord
from otlp.signals import Signal
from otlp.wire import top_level_fields
from pipelines.convert.parts import isolate, item_requests
from pipelines.metrics import OTLP_EXPORT_REQUESTS, OTLP_REJECTED_ITEMS
from pipelines.sinks.answers import Answer, Throttle, Verdict, count_credentials_refused
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from pipelines.sinks.parts import part_rejection, refuses_whole

log = logging.getLogger(__name__)

# Waits before sending the rest of a record again when the store stops answering half-way
# through isolating its refused parts (the part already stored must not go twice).
SPLIT_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True, slots=True)
class Sent:
    """One request's answer: the verdict, the code to count it by, and a partial success."""

    answer: Answer
    code: str
    rejected_items: int = 0
    message: str = ""
    refusal: str = ""
    """How a refusal is named in the dead letters' reason, when not by ``code``."""


@dataclass
class _Delivery:
    delivered: list[BusRecord]
    rejected: list[Rejection]
    transient: bool = False
    retry_after_s: float | None = None

    def add(self, other: _Delivery) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.transient |= other.transient
        if other.retry_after_s:
            self.retry_after_s = max(self.retry_after_s or 0.0, other.retry_after_s)


def parse_signals(names: str) -> frozenset[Signal]:
    """``"traces,logs"`` as signals; ValueError naming the known ones for anything else."""
    try:
        out = frozenset(Signal(n.strip()) for n in names.split(",") if n.strip())
    except ValueError as exc:
        raise ValueError(f"signals {names!r}: {exc}; known: {', '.join(s.value for s in Signal)}") from None
    if not out:
        raise ValueError("signals: at least one of traces, logs, metrics")
    return out


def join_records(records: Sequence[BusRecord], max_bytes: int) -> list[list[BusRecord]]:
    """Consecutive records in groups whose joined values stay under ``max_bytes`` (one may exceed)."""
    groups: list[list[BusRecord]] = []
    size = 0
    for rec in records:
        if groups and size + len(rec.value) <= max_bytes:
            groups[-1].append(rec)
            size += len(rec.value)
        else:
            groups.append([rec])
            size = len(rec.value)
    return groups


class OtlpForwardSink(ABC):
    """Forwards the consumed OTLP bytes to an OTLP receiver; ``_export`` is the transport."""

    name: str
    signals: frozenset[Signal]

    def __init__(self, *, name: str, signals: frozenset[Signal], target: str, tenant_header: str = "",
                 concurrency: int = 4, max_request_bytes: int = 3 * 1024 * 1024,
                 validate: bool = False) -> None:
        self.name = name
        # Decode each record before sending it, and send only the parts that decode: for stores
        # that keep what they read of a request before refusing it (VictoriaLogs stores the log
        # records before a malformed one and answers 400), where splitting a refused request
        # would store that prefix twice.
        self.validate = validate
        self.signals = signals
        self.target = target
        self.tenant_header = tenant_header
        # Below the 4 MiB a gRPC server takes by default.
        self.max_request_bytes = max_request_bytes
        self._sem = asyncio.Semaphore(max(concurrency, 1))
        self._throttle = Throttle()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def _export(self, signal: Signal, tenant: str, payload: bytes) -> Sent:
        """Send one Export request; its classified answer. Never raises for the store's sake."""

    def _count(self, signal: Signal, sent: Sent) -> None:
        OTLP_EXPORT_REQUESTS.labels(self.name, signal.value, sent.code).inc()
        count_credentials_refused(self.name, sent.code)

    async def _call(self, signal: Signal, tenant: str, payload: bytes) -> Sent:
        await self._throttle.wait()
        async with self._sem:
            sent = await self._export(signal, tenant, payload)
        self._throttle.note(sent.answer)
        self._count(signal, sent)
        if sent.answer.retry:
            log.warning("%s export of %s to %s: %s", self.name, signal.value, self.target, sent.answer.detail)
        if sent.rejected_items:
            OTLP_REJECTED_ITEMS.labels(self.name, signal.value).inc(sent.rejected_items)
            log.warning("%s: the store rejected %d %s item(s): %s", self.name, sent.rejected_items,
                        signal.value, sent.message)
        return sent

    def _tenant(self, rec: BusRecord) -> str:
        return rec.tenant if self.tenant_header else ""

    def _groups(self, records: Sequence[BusRecord]) -> list[list[BusRecord]]:
        """Joined groups of one signal (and one tenant when a tenant header is sent)."""
        by_key: dict[tuple[Signal, str], list[BusRecord]] = {}
        for rec in records:
            by_key.setdefault((rec.signal, self._tenant(rec)), []).append(rec)
        return [g for recs in by_key.values() for g in join_records(recs, self.max_request_bytes)]

    def _decodes(self, rec: BusRecord) -> bool:
        try:
            rec.signal.spec.request.FromString(rec.value)
        except DecodeError:
            return False
        return True

    async def write(self, records: Sequence[BusRecord]) -> None:
        broken = [r for r in records if not self._decodes(r)] if self.validate else []
        if broken:
            ids = {id(r) for r in broken}
            records = [r for r in records if id(r) not in ids]
        sends = [self._deliver(g) for g in self._groups(records)] + [self._deliver_parts(r) for r in broken]
        out = _Delivery([], [])
        for part in await asyncio.gather(*sends):
            out.add(part)
        if out.transient:
            # What went through is settled: the retry must not send it to the store twice.
            raise TransientSinkError(f"{self.name} at {self.target} unavailable; retrying",
                                     written=out.delivered, rejected=out.rejected,
                                     retry_after_s=out.retry_after_s)
        if out.rejected:
            raise PermanentSinkError(out.rejected)

    async def _deliver(self, group: list[BusRecord]) -> _Delivery:
        """Deliver one joined group (records of one signal and tenant)."""
        first = group[0]
        payload = b"".join(r.value for r in group)
        sent = await self._call(first.signal, self._tenant(first), payload)
        if sent.answer.verdict is Verdict.DONE:
            if sent.rejected_items and self._all_rejected(first.signal, payload, sent.rejected_items):
                reason = f"{self.name}: partial success, all {sent.rejected_items} rejected: {sent.message}"
                return _Delivery([], [Rejection(r, reason) for r in group])
            return _Delivery(list(group), [])
        if sent.answer.verdict is Verdict.RETRY:
            return _Delivery([], [], True, sent.answer.retry_after_s)
        if len(group) == 1:
            return await self._deliver_parts(first)
        out = _Delivery([], [])
        for part in await asyncio.gather(*(self._deliver([r]) for r in group)):
            out.add(part)
        return out

    @staticmethod
    def _all_rejected(signal: Signal, payload: bytes, rejected: int) -> bool:
        """Whether ``rejected`` counts every item of ``payload`` (metrics count data points, so
        only a single metric is known to be all of it)."""
        items = len(item_requests(payload))
        return rejected >= items if not signal.spec.counts_data_points else items == 1

    async def _deliver_parts(self, rec: BusRecord) -> _Delivery:
        """One record the store refused: deliver what it takes, reject only what it does not."""
        decode = rec.signal.spec.request.FromString

        def validated(b: bytes) -> bytes:
            decode(b)
            return b

        parts = isolate(rec.value, validated)
        rejected = [part_rejection(rec, bad.value, bad.reason) for bad in parts.bad]
        units = top_level_fields(rec.value) if parts.whole else [raw for _, raw in parts.good]
        accepted, refused, left = await self._bisect(rec, units)
        rejected += refused
        for delay in SPLIT_RETRY_DELAYS_S if left and accepted else ():
            # Part of the record is stored: a pipeline retry would send that part again.
            await asyncio.sleep(delay)
            _, refused, left = await self._bisect(rec, left)
            rejected += refused
            if not left:
                break
        if left and not accepted:
            return _Delivery([], [], True)  # nothing of it went in: the pipeline's retry starts over
        if left:
            rejected.append(part_rejection(rec, b"".join(left), f"{self.name} unavailable while "
                                           "isolating the refused parts of this record; not delivered"))
        return _Delivery([] if refuses_whole(rejected, rec) else [rec], rejected)

    async def _bisect(self, rec: BusRecord, units: list[bytes]) -> tuple[bool, list[Rejection], list[bytes]]:
        """Send ``units`` (Export requests) in order, splitting refused calls in halves and a
        refused unit of several items into single items. Returns (anything accepted, the units
        refused alone, the units not sent because the store stopped answering)."""
        accepted = False
        rejected: list[Rejection] = []
        stack = [units] if units else []
        while stack:
            chunk = stack.pop()
            sent = await self._call(rec.signal, self._tenant(rec), b"".join(chunk))
            verdict = sent.answer.verdict
            if verdict is Verdict.DONE:
                accepted = True
                if sent.rejected_items and len(chunk) == 1 and len(item_requests(chunk[0])) == 1:
                    rejected.append(part_rejection(rec, chunk[0], f"{self.name}: partial success, "
                                                   f"rejected: {sent.message}"))
            elif verdict is Verdict.RETRY:
                return accepted, rejected, [u for c in (chunk, *reversed(stack)) for u in c]
            elif len(chunk) > 1:
                half = len(chunk) // 2
                stack += [chunk[half:], chunk[:half]]
            elif len(items := item_requests(chunk[0])) > 1:
                stack.append(items)
            else:
                why = f"{self.name}: {sent.refusal or sent.code}"
                why += f": {sent.message}" if sent.message else ""
                rejected.append(part_rejection(rec, chunk[0], why))
        return accepted, rejected, []
