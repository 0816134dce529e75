"""A minimal HTTP/1.1 server: ``asyncio.Protocol`` + the httptools (llhttp) parser.

Chosen over aiohttp by measurement: OTLP/HTTP needs only POST with a body and a small response,
so a request object, routing tables and middleware are cost without use. Same 76 KB, 512-span
protobuf request, one uvloop process pinned to one core, wrk on the other, 32 connections:
server CPU per request 63-81 us here vs 124-128 us with aiohttp 3.14 for HTTP alone, and
266-409 us vs 345-545 us with the whole ingest path behind it (the commit message has the runs).

Limits are enforced while reading: a declared ``Content-Length`` over ``max_body`` is refused
before the body arrives, and a chunked body is cut off when it passes it.

Requests on one connection are answered in order: reading pauses while a request is handled,
which also gives per-connection back-pressure. Deadlines (``Timeouts``, the Go/Collector
confighttp ones): a request head must arrive within ``read_header_s`` of its first byte and the
whole request within ``read_s``, else 408 and close (a head not complete when either passes is
reported as the head, stage "head", in plain text; a late body gets a ``google.rpc.Status`` in the
request's encoding, as every other refusal); a connection with no request open is closed
after ``idle_s``. Request heads over ``MAX_HEAD_BYTES`` are refused with 431. So idle or slow
clients cannot pile up. ``shutdown`` stops listening, closes idle connections, lets requests in
flight (being received or handled) be answered (with ``Connection: close``) and then closes the
rest.

Protocol details (RFC 9110/9112):

- ``Upgrade`` (``h2c`` from the JDK HttpClient, ``curl --http2``) is ignored and the request
  answered over HTTP/1.1, as RFC 9110 section 7.8 allows;
- an absolute-form target (``POST http://host:4318/v1/traces``, RFC 9112 section 3.2.2) is
  routed by its path;
- a HEAD answer has the headers of the GET answer and no body;
- every answer carries ``x-correlation-id``, errors made here too;
- an error sent before the request is fully read (413, 431, 408, 400) is followed by a
  half-close and up to ``DRAIN_BYTES`` / ``DRAIN_S`` of the rest of the request being read and
  discarded, so the client reads the answer instead of a connection reset;
- a client that closes mid-request or before its answer is counted in
  ``gateway_incomplete_requests_total{stage,cause}`` and logged at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools
from google.rpc import code_pb2, status_pb2

from gateway import correlation, metrics
from gateway.receivers import encodings
from gateway.receivers.tls import HttpTls, http_client_names
from otlp.signals import CORRELATION_HEADER

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    # Over mTLS: the verified client certificate's subject CN and SANs (tls.http_client_names).
    client_names: tuple[str, ...] = ()


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]
# Answers a request refused before its body is complete (too large): (path, headers) -> Response.
TooLargeHook = Callable[[str, dict[str, str]], Response]

_REASONS = {s.value: s.phrase for s in HTTPStatus}
MAX_HEAD_BYTES = 64 * 1024
# After an early error: how much of the rest of the request is read and dropped, and for how long,
# before the connection is closed (closing with unread data makes the kernel send a reset, which
# can destroy the answer before the client reads it).
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_S = 5.0
_CID_HEADER = CORRELATION_HEADER.lower()
_SIGNAL_NAMES = frozenset(("traces", "logs", "metrics"))  # the ``signal`` label, from /v1/<signal>


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connection deadlines in seconds (Go net/http / Collector confighttp semantics)."""

    read_header_s: float = 10.0  # first byte of a request -> end of its head
    read_s: float = 60.0  # first byte of a request -> end of its body
    idle_s: float = 60.0  # no request open (after an answer, or since connect)
    # Rebalancing: a connection this old (0: no limit) or that carried this many requests (0: no
    # limit) gets ``Connection: close`` on its next answer.
    max_age_s: float = 0.0
    max_requests: int = 0

    def sweep_interval(self) -> float:
        """How often deadlines are checked: a quarter of the shortest, within 20 ms .. 1 s."""
        return max(0.02, min(1.0, min(self.read_header_s, self.read_s, self.idle_s) / 4))


def render(resp: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    """The response bytes; ``head_only`` (a HEAD request) keeps Content-Length, drops the body."""
    head = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}",
            f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}"]
    head.extend(f"{k}: {v}" for k, v in resp.headers)
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else resp.body)


def with_correlation_id(resp: Response, headers: dict[str, str]) -> Response:
    """``resp`` with an ``x-correlation-id`` (the client's valid one, else new) unless it has one."""
    if not any(k.lower() == _CID_HEADER for k, _ in resp.headers):
        cid = correlation.accept(headers.get(_CID_HEADER)) or correlation.new_id()
        resp.headers.append((CORRELATION_HEADER, cid))
    return resp


class HttpServer:
    """The listener, its connections, and the limits every connection applies."""

    def __init__(self, handler: Handler, *, max_body: int, too_large: TooLargeHook,
                 idle_timeout_s: float = 60.0, timeouts: Timeouts | None = None,
                 transport_label: str = "http", tls: HttpTls | None = None,
                 max_buffered: int | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.max_body = max_body
        # Bytes of request bodies this server holds, being received or being handled, over all
        # connections. Each body is bounded by max_body, but many slow senders together are not:
        # past ``max_buffered`` a new body is refused with 503 and a retry hint.
        self.buffered = 0
        self.max_buffered = max_buffered if max_buffered is not None else 16 * max_body
        self.too_large = too_large
        self.timeouts = timeouts or Timeouts(idle_s=idle_timeout_s)
        self.transport_label = transport_label  # the ``transport`` label of the metrics it counts
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self.settled = asyncio.Event()  # set when a connection may have stopped being busy
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self), host, port,
                                                reuse_port=reuse_port or None, backlog=1024,
                                                ssl=self.tls.context if self.tls is not None else None)
        if self.tls is not None:
            self.tls.start()
        self._sweeper = loop.call_later(self.timeouts.sweep_interval(), self._sweep)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _sweep(self) -> None:
        """Apply the deadlines to every connection; runs every ``Timeouts.sweep_interval``.

        One periodic pass rather than a timer per request: the request path then only stores
        a timestamp, and a pass over a thousand connections costs well under a millisecond.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        self._sweeper = loop.call_later(self.timeouts.sweep_interval(), self._sweep)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; close idle connections; answer every request begun, being received or
        being handled (up to ``grace_s``, with ``Connection: close``); close every connection.

        As Go's ``http.Server.Shutdown``: a connection with a request partly received is not cut
        (its client would get a reset or broken pipe for a request it was sending in good
        faith) but left to finish, and answered by the handler like any other.
        """
        self.closing = True
        if self.tls is not None:
            self.tls.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy():
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # A request still being received has no task to wait on yet: connections report each
        # change (answered, refused, closed) through ``settled`` instead.
        while any(conn.busy() for conn in self.connections) and loop.time() < deadline:
            self.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled.wait(), deadline - loop.time())
        for conn in list(self.connections):
            conn.close()


class HttpProtocol(asyncio.Protocol):
    """One connection of ``server``: parse, hand complete requests to its handler, answer."""

    __slots__ = ("_begun", "_body", "_body_len", "_born", "_closed_by_us", "_drain_left", "_head_done",
                 "_head_len", "_headers", "_last_active", "_names", "_parser", "_peer", "_peer_eof",
                 "_refused", "_replay", "_requests", "_server", "_task", "_transport", "_upgrade", "_url")

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_len = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._refused = False  # an early error was sent: the rest of the input is dropped
        self._drain_left = 0
        self._task: asyncio.Task[None] | None = None
        self._last_active = 0.0
        self._begun: float | None = None  # when the request being received began (None: none open)
        self._head_done = False
        self._closed_by_us = False
        self._peer_eof = False
        self._peer = ""
        self._names: tuple[str, ...] = ()  # the client certificate's names (mTLS)
        self._born = 0.0
        self._requests = 0  # answered on this connection
        self._upgrade = False  # the request asked for a protocol upgrade (ignored)
        self._replay = False  # ... and llhttp stopped before its body: parse it again without

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._last_active = self._born = asyncio.get_running_loop().time()
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        if self._server.tls is not None:  # called once the handshake is done
            self._names = http_client_names(transport.get_extra_info("peercert"))
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)
        self._server.settled.set()
        self._release_body()
        if self._closed_by_us or self._refused:
            return
        if self._begun is not None:
            self._abandoned("body" if self._head_done else "head", "client_closed", exc)
        elif self.in_flight() is not None:
            self._abandoned("answer", "client_closed", exc)

    def eof_received(self) -> bool:
        # The client will send nothing more. Mid-request that means it gave up (close, counted in
        # connection_lost); with a complete request in hand keep the connection to answer it.
        self._peer_eof = True
        return self.in_flight() is not None and self._begun is None and not self._refused

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drain(len(data))
            return
        self._last_active = asyncio.get_running_loop().time()
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # RFC 9110 7.8: a server may ignore Upgrade and answer over HTTP/1.1. llhttp stops at
            # the end of the upgrading request's head and hands over the rest as another protocol;
            # a fresh parser takes it instead, given the head again (without the upgrade) first
            # when the request has a body llhttp did not read.
            rest = data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b""
            if self._replay:
                self._replay = False
                rest = self._head_without_upgrade() + rest
            self._parser = httptools.HttpRequestParser(self)
            if rest:
                self._feed(rest)
        except httptools.HttpParserError as exc:
            if not self._refused:
                metrics.refused_requests.labels("unknown", self._server.transport_label, "malformed").inc()
                self._respond_and_close(Response(400, f"bad HTTP request: {exc}\n".encode()))

    # -- for HttpServer -----------------------------------------------------------------------
    def in_flight(self) -> asyncio.Task[None] | None:
        return self._task if self._task is not None and not self._task.done() else None

    def busy(self) -> bool:
        """A request is being received (not refused) or handled: closing now would cut it."""
        return self._transport is not None and (
            self.in_flight() is not None or (self._begun is not None and not self._refused))

    def check_deadlines(self, now: float) -> None:
        """Close if idle too long; answer 408 and close if the request being received is late."""
        if self._refused or self._transport is None or self.in_flight() is not None:
            return
        t = self._server.timeouts
        if self._begun is None:
            if now - self._last_active >= t.idle_s:
                self.close()
        elif not self._head_done:
            # read_s bounds the whole request, so it also bounds the head when it is the shorter:
            # an unfinished head is reported as the head whichever deadline it missed.
            head_limit = min(t.read_header_s, t.read_s)
            if now - self._begun > head_limit:
                self._timed_out("head", head_limit)
        elif now - self._begun > t.read_s:
            self._timed_out("body", t.read_s)

    def close(self) -> None:
        if self._transport is not None:
            self._closed_by_us = True
            self._transport.close()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_len = 0
        self._release_body()
        self._begun = self._last_active  # set by data_received just before feeding the parser
        self._head_done = False
        self._upgrade = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._upgrade = "upgrade" in self._headers
        declared = self._headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._server.max_body:
            self._refuse_too_large()
        elif (declared is not None and declared.isdigit()
              and self._server.buffered + int(declared) > self._server.max_buffered):
            self._refuse_busy()
        elif self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            # curl asks before sending bodies over 1 KiB and would otherwise wait a second.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_len += len(body)
        self._server.buffered += len(body)
        if self._body_len > self._server.max_body:
            self._refuse_too_large()
            return
        if self._server.buffered > self._server.max_buffered:
            self._refuse_busy()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._upgrade and (self._headers.get("content-length", "0") not in ("0", "")
                              or "transfer-encoding" in self._headers):
            self._replay = True  # llhttp calls this before the body of an upgrading request
            return
        self._begun = None
        if self._refused or self._transport is None:
            return
        req = Request(self._parser.get_method().decode("latin-1"), self._path(), self._headers,
                      b"".join(self._body), self._names)
        self._body = []
        held, self._body_len = self._body_len, 0  # still held by the handler: released after it
        keep_alive = self._parser.should_keep_alive()
        self._transport.pause_reading()
        # A pipelined request parsed from the same read waits for the one before it.
        prev = self.in_flight()
        self._task = asyncio.get_running_loop().create_task(self._handle(req, keep_alive, prev, held))

    # -- internals ----------------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_len += n
        if self._head_len > MAX_HEAD_BYTES and not self._refused:
            metrics.refused_requests.labels("unknown", self._server.transport_label, "too_large").inc()
            self._respond_and_close(Response(431, b"request head too large\n"))

    def _head_without_upgrade(self) -> bytes:
        skip = ("upgrade", "connection", "http2-settings")
        lines = [f"{self._parser.get_method().decode('latin-1')} {self._url.decode('latin-1')} HTTP/1.1"]
        lines.extend(f"{k}: {v}" for k, v in self._headers.items() if k not in skip)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _path(self) -> str:
        url = self._url
        if not url.startswith(b"/"):
            # absolute-form (RFC 9112 3.2.2): scheme://authority/path?query -> /path
            scheme_end = url.find(b"://")
            if scheme_end >= 0:
                slash = url.find(b"/", scheme_end + 3)
                url = url[slash:] if slash >= 0 else b"/"
        q = url.find(b"?")
        return (url if q < 0 else url[:q]).decode("latin-1")

    def _refuse_too_large(self) -> None:
        self._respond_and_close(self._server.too_large(self._path(), self._headers))

    def _refuse_busy(self) -> None:
        signal = self._path().rpartition("/")[2]
        metrics.refused_requests.labels(signal if signal in _SIGNAL_NAMES else "unknown",
                                        self._server.transport_label, "overloaded").inc()
        log.warning("refusing %s: %d bytes of request bodies held, limit %d (503)", self._peer,
                    self._server.buffered, self._server.max_buffered)
        self._respond_and_close(Response(503, b"too many request bodies being received; retry later\n",
                                         headers=[("Retry-After", "1")]))

    def _release_body(self) -> None:
        self._server.buffered -= self._body_len
        self._body = []
        self._body_len = 0

    def _timed_out(self, stage: str, limit_s: float) -> None:
        metrics.incomplete_requests.labels(self._server.transport_label, stage, "timeout").inc()
        log.warning("closing %s: request %s not received within %.1f s (408)", self._peer, stage, limit_s)
        message = f"request {stage} not received within {limit_s:g} s"
        if not self._head_done:
            # No complete head, so no Content-Type to answer in: a plain-text answer.
            self._respond_and_close(Response(408, (message + "\n").encode()))
            return
        # As every other refusal (OTLP/HTTP spec, "Failures"): a google.rpc.Status in the
        # request's own encoding, DEADLINE_EXCEEDED as gRPC says a missed deadline.
        encoding = encodings.answering(self._headers)
        st = status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message=message)
        self._respond_and_close(Response(408, encoding.status(st), encoding.content_type))

    def _abandoned(self, stage: str, cause: str, exc: Exception | None) -> None:
        metrics.incomplete_requests.labels(self._server.transport_label, stage, cause).inc()
        how = f"{type(exc).__name__}: {exc}" if exc is not None else "connection closed"
        log.warning("client %s gave up during the request %s (%s)", self._peer, stage, how)

    def _respond_and_close(self, resp: Response) -> None:
        """Answer an error before the request is fully read, half-close, drain, then close."""
        self._refused = True
        self._server.settled.set()
        self._release_body()
        transport = self._transport
        if transport is None:
            return
        transport.write(render(with_correlation_id(resp, self._headers), keep_alive=False))
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self._drain_left = DRAIN_BYTES
        transport.resume_reading()
        asyncio.get_running_loop().call_later(DRAIN_S, self.close)
        if self._peer_eof:
            self.close()

    def _aged(self) -> bool:
        """Whether this connection has served its time (``Timeouts.max_age_s`` / ``max_requests``)."""
        t = self._server.timeouts
        self._requests += 1
        if t.max_requests and self._requests >= t.max_requests:
            return True
        return bool(t.max_age_s) and asyncio.get_running_loop().time() - self._born >= t.max_age_s

    def _drain(self, n: int) -> None:
        self._drain_left -= n
        if self._drain_left < 0:
            self.close()

    async def _handle(self, req: Request, keep_alive: bool, prev: asyncio.Task[None] | None,
                      held: int = 0) -> None:
        try:
            resp = await self._server.handler(req)
        except Exception:
            log.exception("unhandled error answering %s %s", req.method, req.path)
            resp = Response(500, b"internal error\n")
        finally:
            self._server.buffered -= held
        if prev is not None:
            await asyncio.wait((prev,))
        self._server.settled.set()  # no await from here on: done when a waiter looks
        transport = self._transport
        if transport is None or transport.is_closing() or self._refused:
            return  # gone, or an error already answered (a pipelined request after it is dropped)
        keep_alive = keep_alive and not self._server.closing and not self._peer_eof and not self._aged()
        transport.write(render(with_correlation_id(resp, req.headers), keep_alive, req.method == "HEAD"))
        self._last_active = asyncio.get_running_loop().time()
        if not keep_alive:
            self.close()
        elif self._task is asyncio.current_task():
            transport.resume_reading()


async def serve(handler: Handler, host: str, port: int, *, max_body: int, too_large: TooLargeHook,
                reuse_port: bool = False, idle_timeout_s: float = 60.0,
                timeouts: Timeouts | None = None, tls: HttpTls | None = None,
                max_buffered: int | None = None) -> HttpServer:
    """Listen and answer with ``handler``; the caller ends it with ``shutdown``.

    Deadlines: ``timeouts``, else the handler's ``timeouts`` attribute if it has one (the OTLP
    handler carries the configured ones), else ``Timeouts(idle_s=idle_timeout_s)``.
    """
    if timeouts is None:
        own = getattr(handler, "timeouts", None)
        timeouts = own if isinstance(own, Timeouts) else Timeouts(idle_s=idle_timeout_s)
    server = HttpServer(handler, max_body=max_body, too_large=too_large, timeouts=timeouts, tls=tls,
                        max_buffered=max_buffered)
    await server.start(host, port, reuse_port=reuse_port)
    return server
