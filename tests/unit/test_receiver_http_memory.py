"""Many slow senders of large bodies cannot grow the OTLP/HTTP server's memory without bound:
``server.max_buffered_request_bytes`` caps what all connections hold together (503 past it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from bus.memory import MemoryBus
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers import httpserver
from gateway.receivers.otlp_http import OtlpHttp
from gateway.tenancy import Authenticator, RateLimiter
from settings import config
from tests.unit.test_receiver_http import spans
from tests.unit.test_receiver_http_protocol import post
from tests.waiting import await_for

MAX_BODY = 256 * 1024
MAX_BUFFERED = 3 * MAX_BODY


@pytest.fixture
async def server() -> AsyncIterator[httpserver.HttpServer]:
    cfg = config.load(None, env={"TG_SERVER__MAX_REQUEST_BYTES": str(MAX_BODY), "TG_BATCH__MAX_AGE_MS": "0"})
    bus = MemoryBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0.0)
    h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
    srv = await httpserver.serve(h, "127.0.0.1", 0, max_body=MAX_BODY, too_large=h.too_large,
                                 max_buffered=MAX_BUFFERED)
    yield srv
    await srv.shutdown(1.0)
    await batcher.close()


def _held(server: httpserver.HttpServer, at_least: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.buffered >= at_least
    return check


def _released(server: httpserver.HttpServer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.buffered == 0
    return check


async def _hold(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A sender that declared a full-size body, sent all but its last byte, and waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = post(b"x" * MAX_BODY)
    writer.write(head[:-1])
    await writer.drain()
    return reader, writer


def _refused_overloaded() -> float:
    return REGISTRY.get_sample_value("gateway_refused_requests_total",
                                     {"signal": "traces", "transport": "http", "reason": "overloaded"}) or 0.0


async def _answer(port: int, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(body))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    return head


async def test_slow_senders_together_are_held_to_the_budget(server: httpserver.HttpServer) -> None:
    holders = [await _hold(server.port) for _ in range(3)]
    await await_for(_held(server, MAX_BUFFERED - 3), within=5, what="three bodies held")
    before = _refused_overloaded()
    head = await _answer(server.port, spans(2))  # a fourth body does not fit: 503, retry later
    assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head and b"x-correlation-id" in head
    assert server.buffered <= MAX_BUFFERED
    assert _refused_overloaded() == before + 1
    for _, writer in holders:
        writer.close()
    await await_for(_released(server), within=5, what="the held bodies released")
    assert (await _answer(server.port, spans(2))).startswith(b"HTTP/1.1 200")
    assert server.buffered == 0  # released once answered too


async def test_a_chunked_body_is_counted_as_it_arrives(server: httpserver.HttpServer) -> None:
    holders = [await _hold(server.port) for _ in range(3)]
    await await_for(_held(server, MAX_BUFFERED - 3), within=5, what="three bodies held")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    chunk = b"y" * 100  # no length declared: counted as it arrives, and it does not fit
    writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 503")
    writer.close()
    for _, w in holders:
        w.close()
    await await_for(_released(server), within=5, what="everything released")
