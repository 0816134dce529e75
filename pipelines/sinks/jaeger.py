"""Jaeger sink: the consumed OTLP bytes go to Jaeger's OTLP/gRPC receiver untouched.

A Kafka message value already is a serialized ``ExportTraceServiceRequest`` (DESIGN.md
principle 2), and concatenated requests are a valid request, so this sink never decodes spans:
it joins records up to ``max_request_bytes`` and calls ``TraceService/Export`` with an identity
serializer. The tenant travels inside, as the ``tenant.id`` resource attribute the gateway set
(Jaeger shows it as a process tag).

Status codes: ``INVALID_ARGUMENT`` means the data is bad, so a joined call that gets it is
split into one call per record to find the bad ones, which are rejected for good. Bytes that
are not a protobuf at all never reach the receiver's code: Jaeger's gRPC server (grpc-go)
answers ``INTERNAL "grpc: error unmarshalling request: ..."``, verified against Jaeger 2.13, so
that answer is taken as bad data too; otherwise one garbage record would block the partition
forever. Every other
failure (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED``, and configuration
problems such as ``UNIMPLEMENTED``) says nothing against the data, so it is transient: the
pipeline retries with backoff and the data waits in Kafka. The transient error names the
records that did go through, so the pipeline's retry skips them: Jaeger does not deduplicate
spans.

A record Jaeger refuses alone is split: parts that do not decode here (a malformed varint in
one of the requests the gateway batched into the record) are rejected at once, the rest goes
to Jaeger by halves down to single spans (with their resource and scope), so only what Jaeger
refuses is rejected, each as a copy of the record holding just that part, for the dead-letter
topic. Should Jaeger stop answering half-way, the rest of the record is sent again after short
waits (about 7.5 s in all), then dead-lettered with that reason: the part already in Jaeger
must not be sent twice, which a pipeline retry of the record would do.

Jaeger (2.x, as the stack runs it) does not refuse a span name or attribute that is not UTF-8:
it stores the span with the name ``invalid-span-name`` and the original bytes in a binary tag
of that name, so such a span is kept, marked, and not dead-lettered by this sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bus.contract import BusRecord
from otlp.signals import Signal
from otlp.wire import top_level_fields
from pipelines.convert.parts import isolate, item_requests
from pipelines.metrics import JAEGER_REJECTED_SPANS, JAEGER_REQUESTS
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from pipelines.sinks.parts import part_rejection
from settings.config import Config

log = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# What grpc-go answers (as INTERNAL) when the request bytes do not decode.
UNMARSHAL_ERROR = "grpc: error unmarshalling request"


# Waits before sending the rest of a record again when Jaeger stops answering half-way through
# isolating its refused parts (the part already in Jaeger must not go twice).
_SPLIT_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


def _identity(b: bytes) -> bytes:
    return b


def _validated(b: bytes) -> bytes:
    """``b`` itself once it decodes as an ExportTraceServiceRequest; DecodeError if not."""
    ExportTraceServiceRequest.FromString(b)
    return b


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


class JaegerSink:
    """Forwards OTLP trace bytes to Jaeger over gRPC."""

    name = "jaeger"
    signals = frozenset({Signal.TRACES})

    def __init__(self, endpoint: str, *, timeout_s: float = 10.0, concurrency: int = 4,
                 max_request_bytes: int = 3 * 1024 * 1024) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        # Below the 4 MiB a gRPC server takes by default.
        self.max_request_bytes = max_request_bytes
        self._sem = asyncio.Semaphore(concurrency)
        self._channel: grpc.aio.Channel | None = None
        self._export: grpc.aio.UnaryUnaryMultiCallable | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.endpoint, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ])
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=_identity, response_deserializer=_identity)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(self, payload: bytes) -> grpc.StatusCode:
        """Export once; the status, with an undecodable request reported as INVALID_ARGUMENT."""
        assert self._export is not None, "start() first"
        async with self._sem:
            try:
                raw = await self._export(payload, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                JAEGER_REQUESTS.labels(code.name).inc()
                if code is grpc.StatusCode.INTERNAL and (exc.details() or "").startswith(UNMARSHAL_ERROR):
                    return grpc.StatusCode.INVALID_ARGUMENT
                if code is not grpc.StatusCode.INVALID_ARGUMENT:
                    log.warning("jaeger export: %s %s", code.name, exc.details())
                return code
        JAEGER_REQUESTS.labels("OK").inc()
        resp = ExportTraceServiceResponse.FromString(raw)
        if resp.partial_success.rejected_spans:
            JAEGER_REJECTED_SPANS.inc(resp.partial_success.rejected_spans)
            log.warning("jaeger rejected %d span(s): %s", resp.partial_success.rejected_spans,
                        resp.partial_success.error_message)
        return grpc.StatusCode.OK

    async def _deliver(self, group: list[BusRecord]) -> tuple[list[BusRecord], list[Rejection], bool]:
        """(delivered, rejected, transient failure seen) for one joined group."""
        code = await self._call(b"".join(r.value for r in group))
        if code is grpc.StatusCode.OK:
            return group, [], False
        if code is not grpc.StatusCode.INVALID_ARGUMENT:
            return [], [], True
        if len(group) == 1:
            return await self._deliver_parts(group[0])
        delivered: list[BusRecord] = []
        rejected: list[Rejection] = []
        transient = False
        for part in await asyncio.gather(*(self._deliver([r]) for r in group)):
            delivered += part[0]
            rejected += part[1]
            transient |= part[2]
        return delivered, rejected, transient

    async def _deliver_parts(self, rec: BusRecord) -> tuple[list[BusRecord], list[Rejection], bool]:
        """One record Jaeger refused: deliver what it takes, reject only what it does not.

        Parts that do not decode here (``pipelines.convert.parts``) are rejected without a call.
        The rest is sent by halves (``_bisect``), down to single items with their resource and
        scope. A refused call is an unmarshalling error in Jaeger, so nothing of it was
        accepted, and no accepted part is ever sent again: Jaeger does not deduplicate.
        """
        parts = isolate(rec.value, _validated)
        rejected = [part_rejection(rec, bad.value, bad.reason) for bad in parts.bad]
        units = top_level_fields(rec.value) if parts.whole else [raw for _, raw in parts.good]
        accepted, refused, left = await self._bisect(rec, units)
        rejected += refused
        for delay in _SPLIT_RETRY_DELAYS_S if left and accepted else ():
            # Part of the record is in Jaeger: a pipeline retry would send that part again.
            await asyncio.sleep(delay)
            _, refused, left = await self._bisect(rec, left)
            rejected += refused
            if not left:
                break
        if left and not accepted:
            return [], [], True  # nothing of it went in: the pipeline's retry starts over
        if left:
            rejected.append(part_rejection(rec, b"".join(left), "jaeger unavailable while isolating "
                                           "the refused parts of this record; not delivered"))
        whole_rejected = any(r.record is rec for r in rejected)
        return ([] if whole_rejected else [rec]), rejected, False

    async def _bisect(self, rec: BusRecord, units: list[bytes]) -> tuple[bool, list[Rejection], list[bytes]]:
        """Send ``units`` (Export requests) in order, splitting refused calls in halves and a
        refused unit of several items into single items. Returns (anything accepted, the units
        refused alone, the units not sent because Jaeger stopped answering)."""
        accepted = False
        rejected: list[Rejection] = []
        stack = [units] if units else []
        while stack:
            chunk = stack.pop()
            code = await self._call(b"".join(chunk))
            if code is grpc.StatusCode.OK:
                accepted = True
            elif code is not grpc.StatusCode.INVALID_ARGUMENT:
                return accepted, rejected, [u for c in (chunk, *reversed(stack)) for u in c]
            elif len(chunk) > 1:
                half = len(chunk) // 2
                stack += [chunk[half:], chunk[:half]]
            elif len(items := item_requests(chunk[0])) > 1:
                stack.append(items)
            else:
                rejected.append(part_rejection(rec, chunk[0], "jaeger: INVALID_ARGUMENT"))
        return accepted, rejected, []

    async def write(self, records: Sequence[BusRecord]) -> None:
        groups = join_records(records, self.max_request_bytes)
        delivered: list[BusRecord] = []
        rejected: list[Rejection] = []
        transient = False
        for part in await asyncio.gather(*(self._deliver(g) for g in groups)):
            delivered += part[0]
            rejected += part[1]
            transient |= part[2]
        if transient:
            # What went through is settled: the retry must not send it to Jaeger twice.
            raise TransientSinkError(f"jaeger at {self.endpoint} unavailable; retrying",
                                     written=delivered, rejected=rejected)
        if rejected:
            raise PermanentSinkError(rejected)


def make_sink(cfg: Config) -> JaegerSink:
    """Entry point for ``telemetry-gateway pipelines --sink jaeger``."""
    return JaegerSink(cfg.pipelines.jaeger.endpoint)
