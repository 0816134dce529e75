"""OTLP/gRPC receiver on ``grpc.aio`` that never builds request message objects.

The three ``Export`` methods are registered as generic handlers with no request deserializer,
so a handler receives the request's raw protobuf bytes and passes them to ``Ingest`` untouched
(docs/architecture.md principle 1).

They are registered as client-streaming although OTLP's ``Export`` is unary: the wire is the
same, and it lets the handler run before grpc reads the request. So the gateway refuses an
overloaded call before reading its body. Measured against a unary registration on 76 KB
requests, the server CPU per call is the same within the noise of this machine.

Compression: grpc's own inflation is off (``grpc.per_message_decompression``), so a gzip or
deflate message reaches the handler compressed and is decoded by the same ``compression`` table
rows as an OTLP/HTTP body: same size cap, inflation ratio cap, member cap, off the event loop
when large. grpc does not tell the handler the message's ``grpc-encoding``, so the message is
recognised by its first bytes (``compression.for_grpc_message``): gzip's magic, which no
protobuf Export request can start with (0x1f is field 3 with the invalid wire type 7), or a
zlib header (grpc's deflate), which a request could start with only by beginning with the
undefined field 15: such a message that does not inflate is ingested as it is, and the content
check decides. grpc still enforces ``max_receive_message_length``, now on the message as sent
(``server.max_request_bytes``, as for an HTTP body), answering RESOURCE_EXHAUSTED itself.

grpc-python knows three ``grpc-encoding`` names, identity, gzip and deflate, and all three are
enabled. Its header parser refuses every other name (``zstd``, ``snappy``, ``br``) with INTERNAL
before any handler runs, where the gateway would answer UNIMPLEMENTED: nothing here can change
that (the Collector, on grpc-go, also takes zstd and snappy messages).

Refusals made here:

- no complete message (none sent, or the stream ended mid-message): INVALID_ARGUMENT. grpc
  gives the handler no message in these cases and also after refusing an oversized one
  (RESOURCE_EXHAUSTED, counted here as ``too_large``): see ``export`` for how they are told apart;
- a second message on the unary ``Export``: INVALID_ARGUMENT (the request is malformed as a
  unary call; UNIMPLEMENTED would wrongly say the method does not exist);
- inflated size or ratio over the caps: RESOURCE_EXHAUSTED without RetryInfo (not retryable);
- bad gzip or deflate, or more than ``compression.MAX_MEMBERS`` gzip members: INVALID_ARGUMENT.

A client that cancels (or whose deadline passes) before its answer is counted in
``gateway_incomplete_requests_total{transport="grpc"}`` and logged at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from gateway import metrics
from gateway.ingest import Ingest, Outcome
from gateway.receivers import compression, tls
from gateway.receivers.encodings import export_response
from gateway.receivers.status import GRPC_CODE, rpc_status
from otlp.signals import CORRELATION_HEADER, Signal
from settings.config import ServerConfig

log = logging.getLogger(__name__)

TRANSPORT = "grpc"
# grpc_compression_algorithm bits: identity (0), deflate (1), gzip (2): all grpc knows.
_ENABLED_COMPRESSION = 1 << 0 | 1 << 1 | 1 << 2
_GRPC_REFUSED = "grpc_refused"  # stage while telling a message grpc refused from a missing one
_GRPC_REFUSED_WAIT_S = 0.05
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


Export = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[object]]


def _export(ingest: Ingest, signal: Signal, cfg: ServerConfig) -> Export:
    limits = compression.Limits(cfg.max_decompressed_bytes, cfg.max_decompression_ratio)
    mtls = bool(cfg.tls.client_ca_file)

    async def export(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> object:
        headers = {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        cid = ingest.correlation_id(headers)
        gone = _ClientGone(context, signal)
        # A cancel shows up as this task's cancellation, or only in the call's state when it
        # lands after the handler's last await; either is counted once.
        context.add_done_callback(gone.done)
        try:
            await context.send_initial_metadata(((CORRELATION_HEADER, cid),))
            outcome = ingest.admit(signal, TRANSPORT, cid)
            if outcome is None:
                request = await _one_message(context)
                if request is None:
                    # No message: none sent, a truncated one, or one over max_receive_message_length
                    # that grpc refused itself. In that last case the call is already over: grpc
                    # finishes it (done callback) and cancels this handler within a loop turn or
                    # two, which tells the cases apart for the count. Only refusals wait here.
                    gone.stage = _GRPC_REFUSED
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.finished.wait(), _GRPC_REFUSED_WAIT_S)
                    if gone.finished.is_set():
                        raise asyncio.CancelledError
                    gone.stage = "body"
                    request = "no complete request message (none sent, or a truncated one)"
                if isinstance(request, str):
                    outcome = ingest.refuse(signal, TRANSPORT, "malformed", request, cid)
                else:
                    gone.stage = "answer"
                    names = tls.grpc_client_names(context.auth_context()) if mtls else ()
                    outcome = await _decode_and_ingest(ingest, signal, limits, headers, request, cid, names)
        except asyncio.CancelledError:
            if gone.stage == _GRPC_REFUSED:
                ingest.refuse(signal, TRANSPORT, "too_large",
                              f"request message larger than {cfg.max_request_bytes} bytes", cid)
            else:
                gone.count()
            raise
        if outcome.refused is not None:
            st = rpc_status(outcome.refused, outcome.message, outcome.retry_after_s)
            await context.abort(GRPC_CODE[outcome.refused], outcome.message,
                                ((_STATUS_DETAILS_KEY, st.SerializeToString()),))
        return export_response(signal, outcome.rejected_items, outcome.message)

    return export


class _ClientGone:
    """Counts (once) and logs a call its client cancelled, with how far the request had got."""

    __slots__ = ("_context", "_counted", "_signal", "finished", "stage")

    def __init__(self, context: grpc.aio.ServicerContext, signal: Signal) -> None:
        self._context = context
        self._signal = signal
        self._counted = False
        self.stage = "body"  # reading the request; "answer" once it is being ingested
        self.finished = asyncio.Event()  # the call is over (grpc's done callback ran)

    def done(self, context: grpc.aio.ServicerContext) -> None:
        self.finished.set()
        if context.cancelled():
            self.count()

    def count(self) -> None:
        if self._counted:
            return
        self._counted = True
        metrics.incomplete_requests.labels(TRANSPORT, self.stage, "client_closed").inc()
        # grpc gives an empty peer once the transport is gone (a cancelled call often is).
        peer = self._context.peer()
        log.warning("%s cancelled its %s export during the request %s",
                    f"client {peer}" if peer else "a client", self._signal.value, self.stage)


async def _one_message(context: grpc.aio.ServicerContext) -> bytes | str | None:
    """The call's only request message, None if there is none, or why there are more.

    Reading past the first message costs nothing for a unary client: it half-closes with the
    message, so the second read returns at once.
    """
    request = await context.read()
    if not isinstance(request, bytes):
        return None
    if isinstance(await context.read(), bytes):
        return "more than one request message on the unary Export method"
    return request


async def _decode_and_ingest(ingest: Ingest, signal: Signal, limits: compression.Limits,
                             headers: dict[str, str], request: bytes, cid: str,
                             client_names: tuple[str, ...]) -> Outcome:
    decoder = compression.for_grpc_message(request)
    if decoder is not None:
        try:
            request = await compression.decode_async(decoder, request, limits)
        except compression.TooLarge as exc:
            return ingest.refuse(signal, TRANSPORT, "too_large", str(exc), cid)
        except compression.BadEncoding as exc:
            if decoder is not compression.DEFLATE:
                return ingest.refuse(signal, TRANSPORT, "malformed", str(exc), cid)
            # Not deflate after all: a request starting with field 15 (see the module docstring).
    return await ingest.ingest(signal, TRANSPORT, headers, request, cid, client_names=client_names)


def handlers(ingest: Ingest, cfg: ServerConfig) -> list[grpc.GenericRpcHandler]:
    """One generic handler per OTLP service, each with its ``Export`` method."""
    out = []
    for signal in Signal:
        method = grpc.stream_unary_rpc_method_handler(
            _export(ingest, signal, cfg),
            request_deserializer=None,  # raw bytes in
            response_serializer=signal.spec.response.SerializeToString,
        )
        out.append(grpc.method_handlers_generic_handler(signal.spec.grpc_service, {"Export": method}))
    return out


# grpc's channel arguments are C ints: a larger value fails the server's construction
# (OverflowError). INT_MAX milliseconds (about 24.8 days) is grpc core's own default for these
# (off) and the top of their range, so a longer duration is cut to it.
_GRPC_MAX_MS = (1 << 31) - 1
# enforcement_policy.min_time 0: grpc-go's default MinTime (keepalive.EnforcementPolicy), which the
# Collector serves with; grpc core's own 0 would allow pings at any rate.
GRPC_GO_DEFAULT_MIN_TIME_S = 300.0


def _grpc_ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds in grpc's int range: a positive value at least 1 ms (the
    bottom of grpc's range; 0 means off here), at most INT_MAX, so a Collector value such as
    ``max_connection_age: 720h`` starts the server."""
    if seconds <= 0:
        return 0
    return max(1, min(_GRPC_MAX_MS, round(seconds * 1000)))


def keepalive_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    """grpc channel arguments for ``server.grpc.keepalive`` (0 leaves grpc's own default), in
    milliseconds, each at most 2**31 - 1 (grpc's int: a longer duration is cut to it)."""
    sp, ep = cfg.grpc.keepalive.server_parameters, cfg.grpc.keepalive.enforcement_policy
    out = [(arg, _grpc_ms(seconds)) for arg, seconds in (
        ("grpc.max_connection_idle_ms", sp.max_connection_idle_s),
        ("grpc.max_connection_age_ms", sp.max_connection_age_s),
        ("grpc.max_connection_age_grace_ms", sp.max_connection_age_grace_s),
        ("grpc.keepalive_time_ms", sp.time_s),
        ("grpc.keepalive_timeout_ms", sp.timeout_s),
    ) if seconds > 0]
    # grpc-go (the Collector's) takes MinTime 0 as its default, 5 minutes (keepalive.EnforcementPolicy:
    # "The current default value is 5 minutes"); grpc core would take 0 as "any rate".
    min_time_s = ep.min_time_s if ep.min_time_s > 0 else GRPC_GO_DEFAULT_MIN_TIME_S
    out.append(("grpc.http2.min_ping_interval_without_data_ms", _grpc_ms(min_time_s)))
    out.append(("grpc.keepalive_permit_without_calls", 1 if ep.permit_without_stream else 0))
    return out


async def serve(ingest: Ingest, cfg: ServerConfig, *, reuse_port: bool,
                tls_source: tls.CertSource | None = None) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on ``cfg.host:cfg.grpc_port``; return it and the port it bound.
    ``tls_source``: the ``server.tls`` files as OTLP/HTTP reads them too (else read here alone).

    No ``maximum_concurrent_rpcs``: grpc's refusals under it are counted nowhere, and
    ``Ingest.admit`` already refuses before the body is read, for both transports together.
    """
    server = grpc.aio.server(
        handlers=handlers(ingest, cfg),
        options=[
            # The message as sent; its decompressed size is checked by compression (see the docstring).
            ("grpc.max_receive_message_length", cfg.max_request_bytes),
            ("grpc.per_message_decompression", 0),
            ("grpc.compression_enabled_algorithms_bitset", _ENABLED_COMPRESSION),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *keepalive_options(cfg),
        ],
    )
    address = f"{cfg.host}:{cfg.grpc_port}"
    try:
        if cfg.tls.enabled:
            bound = server.add_secure_port(address, tls.grpc_credentials(cfg.tls, "server.tls", tls_source))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's way of saying the address is in use
        raise OSError(f"cannot listen for OTLP/gRPC on {cfg.host}:{cfg.grpc_port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {cfg.host}:{cfg.grpc_port}")
    await server.start()
    return server, bound
