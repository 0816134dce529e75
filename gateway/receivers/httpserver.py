"""A minimal HTTP/1.1 server: ``asyncio.Protocol`` + the httptools (llhttp) parser.

Chosen over aiohttp by measurement: OTLP/HTTP needs only POST with a body and a small response,
so a request object, routing tables and middleware are cost without use. Same 76 KB, 512-span
protobuf request, one uvloop process pinned to one core, wrk on the other, 32 connections:
server CPU per request 63-81 us here vs 124-128 us with aiohttp 3.14 for HTTP alone, and
266-409 us vs 345-545 us with the whole ingest path behind it (the commit message has the runs).

Limits are enforced while reading: a declared ``Content-Length`` over ``max_body`` is refused
before the body arrives, and a chunked body is cut off when it passes it.

Requests on one connection are answered in order: reading pauses while a request is handled,
which also gives per-connection back-pressure. Connections idle longer than ``idle_timeout_s``
are closed, and request heads over ``MAX_HEAD_BYTES`` refused with 431, so idle or slow clients
cannot pile up. ``shutdown`` stops listening, closes idle connections, lets requests in flight
be answered (with ``Connection: close``) and then closes the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


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


def render(resp: Response, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}",
            f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}"]
    head.extend(f"{k}: {v}" for k, v in resp.headers)
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


class HttpServer:
    """The listener, its connections, and the limits every connection applies."""

    def __init__(self, handler: Handler, *, max_body: int, too_large: TooLargeHook,
                 idle_timeout_s: float = 60.0) -> None:
        self.handler = handler
        self.max_body = max_body
        self.too_large = too_large
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self), host, port,
                                                reuse_port=reuse_port or None, backlog=1024)
        self._sweeper = loop.call_later(self.idle_timeout_s / 2, self._sweep)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _sweep(self) -> None:
        """Close connections idle for longer than the timeout; runs every half timeout."""
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_timeout_s
        for conn in list(self.connections):
            if conn.idle_since(cutoff):
                conn.close()
        self._sweeper = loop.call_later(self.idle_timeout_s / 2, self._sweep)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; answer requests in flight (up to ``grace_s``); close every connection."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        busy = []
        for conn in list(self.connections):
            task = conn.in_flight()
            if task is None:
                conn.close()
            else:
                busy.append(task)
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for conn in list(self.connections):
            conn.close()


class HttpProtocol(asyncio.Protocol):
    """One connection of ``server``: parse, hand complete requests to its handler, answer."""

    __slots__ = ("_body", "_body_len", "_head_len", "_headers", "_last_active", "_parser", "_refused",
                 "_server", "_task", "_transport", "_url")

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_len = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._refused = False
        self._task: asyncio.Task[None] | None = None
        self._last_active = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._last_active = asyncio.get_running_loop().time()
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._last_active = asyncio.get_running_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._respond_and_close(Response(400, b"upgrade not supported\n"))
        except httptools.HttpParserError as exc:
            if not self._refused:
                self._respond_and_close(Response(400, f"bad HTTP request: {exc}\n".encode()))

    # -- for HttpServer -----------------------------------------------------------------------
    def in_flight(self) -> asyncio.Task[None] | None:
        return self._task if self._task is not None and not self._task.done() else None

    def idle_since(self, cutoff: float) -> bool:
        return self.in_flight() is None and self._last_active < cutoff

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_len = 0
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        declared = self._headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._server.max_body:
            self._refuse_too_large()
        elif self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            # curl asks before sending bodies over 1 KiB and would otherwise wait a second.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_len += len(body)
        if self._body_len > self._server.max_body:
            self._refuse_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._refused or self._transport is None:
            return
        req = Request(self._parser.get_method().decode("latin-1"), self._path(), self._headers,
                      b"".join(self._body))
        self._body = []
        keep_alive = self._parser.should_keep_alive()
        self._transport.pause_reading()
        # A pipelined request parsed from the same read waits for the one before it.
        prev = self.in_flight()
        self._task = asyncio.get_running_loop().create_task(self._handle(req, keep_alive, prev))

    # -- internals ----------------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_len += n
        if self._head_len > MAX_HEAD_BYTES and not self._refused:
            self._respond_and_close(Response(431, b"request head too large\n"))

    def _path(self) -> str:
        url = self._url
        q = url.find(b"?")
        return (url if q < 0 else url[:q]).decode("latin-1")

    def _refuse_too_large(self) -> None:
        self._respond_and_close(self._server.too_large(self._path(), self._headers))

    def _respond_and_close(self, resp: Response) -> None:
        self._refused = True
        self._body = []
        if self._transport is not None:
            self._transport.write(render(resp, keep_alive=False))
            self._transport.close()

    async def _handle(self, req: Request, keep_alive: bool, prev: asyncio.Task[None] | None) -> None:
        try:
            resp = await self._server.handler(req)
        except Exception:
            log.exception("unhandled error answering %s %s", req.method, req.path)
            resp = Response(500, b"internal error\n")
        if prev is not None:
            await asyncio.wait((prev,))
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self._server.closing
        transport.write(render(resp, keep_alive))
        self._last_active = asyncio.get_running_loop().time()
        if not keep_alive:
            transport.close()
        elif self._task is asyncio.current_task():
            transport.resume_reading()


async def serve(handler: Handler, host: str, port: int, *, max_body: int, too_large: TooLargeHook,
                reuse_port: bool = False, idle_timeout_s: float = 60.0) -> HttpServer:
    """Listen and answer with ``handler``; the caller ends it with ``shutdown``."""
    server = HttpServer(handler, max_body=max_body, too_large=too_large, idle_timeout_s=idle_timeout_s)
    await server.start(host, port, reuse_port=reuse_port)
    return server
