"""OTLP/HTTP protocol edges on a real loopback socket: h2c upgrade, absolute-form, HEAD,
correlation ids on errors, deadlines, early refusals delivered, clients that give up."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator

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
from tests.waiting import await_for


def _received_spans() -> float:
    return REGISTRY.get_sample_value("gateway_received_items_total",
                                     {"signal": "traces", "transport": "http", "tenant": "default"}) or 0.0


class Gw:
    def __init__(self, server: httpserver.HttpServer, bus: MemoryBus) -> None:
        self.server = server
        self.bus = bus
        self.port = server.port


@pytest.fixture
async def gw() -> AsyncIterator[Gw]:
    cfg = config.load(None, env={"TG_SERVER__MAX_REQUEST_BYTES": "65536",
                                 "TG_SERVER__MAX_DECOMPRESSED_BYTES": "4194304",
                                 "TG_SERVER__READ_HEADER_TIMEOUT_S": "0.3",
                                 "TG_SERVER__READ_TIMEOUT_S": "0.6",
                                 "TG_BATCH__MAX_AGE_MS": "0"})
    bus = MemoryBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0.0)
    h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
    server = await httpserver.serve(h, "127.0.0.1", 0, max_body=cfg.server.max_request_bytes,
                                    too_large=h.too_large)
    yield Gw(server, bus)
    await server.shutdown(1.0)
    await batcher.close()


def post(body: bytes, *, target: bytes = b"/v1/traces", extra: bytes = b"", method: bytes = b"POST") -> bytes:
    return (method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-protobuf\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def read_response(reader: asyncio.StreamReader, *,
                        head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, lower-case headers, body (none for a HEAD answer)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    n = 0 if head_only else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(n), 5) if n else b""
    return status, headers, body


async def test_h2c_upgrade_is_ignored_and_answered_over_http11(gw: Gw) -> None:
    """The JDK HttpClient (OpenTelemetry Java's JDK sender) and curl --http2 send this on cleartext."""
    before = _received_spans()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    upgrade = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAEAAEAAAAIAAAAAAAMAAAAAAAQBAAAAAAUAAEAAAAYABgAA\r\n")
    writer.write(post(spans(2), extra=upgrade) + post(spans(1)))  # and a pipelined one after it
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["x-correlation-id"] and "upgrade" not in headers
    status, _, _ = await read_response(reader)
    assert status == 200
    assert _received_spans() == before + 3  # the upgrading request's body was read, not dropped
    writer.close()


async def test_absolute_form_target(gw: Gw) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    target = f"http://127.0.0.1:{gw.port}/v1/traces?x=1".encode()
    writer.write(post(spans(1), target=target))
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_head_answer_has_no_body(gw: Gw) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"HEAD /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n" + post(spans(1)))
    status, headers, _ = await read_response(reader, head_only=True)
    assert status == 405 and int(headers["content-length"]) > 0
    # The next bytes are the next answer, not the 405's body.
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"POST /v1/traces HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"POST /v1/traces HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413),
])
async def test_every_error_answer_carries_a_correlation_id(gw: Gw, request_bytes: bytes, status: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request_bytes)
    got, headers, _ = await read_response(reader)
    assert got == status
    assert headers.get("x-correlation-id")
    writer.close()


def _incomplete(stage: str, cause: str) -> float:
    return REGISTRY.get_sample_value("gateway_incomplete_requests_total",
                                     {"transport": "http", "stage": stage, "cause": cause}) or 0.0


@pytest.mark.parametrize(("partial", "stage"), [
    (b"POST /v1/traces HTTP/1.1\r\nContent-Type: applic", "head"),
    (b"POST /v1/traces HTTP/1.1\r\nContent-Length: 100\r\n\r\nab", "body"),
])
async def test_slow_sender_gets_408_and_others_are_served_meanwhile(gw: Gw, partial: bytes,
                                                                      stage: str) -> None:
    before = _incomplete(stage, "timeout")
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", gw.port)
    slow_w.write(partial)
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(post(spans(1)))
    assert (await read_response(reader))[0] == 200  # not held up by the slow one
    status, headers, _ = await read_response(slow_r)
    took = time.monotonic() - started
    assert status == 408 and headers["connection"] == "close" and headers["x-correlation-id"]
    limit = 0.3 if stage == "head" else 0.6
    assert limit <= took < limit + 1.0, took
    assert await asyncio.wait_for(slow_r.read(), 5) == b""  # then closed
    assert _incomplete(stage, "timeout") == before + 1
    slow_w.close()
    writer.close()


def test_early_413_is_delivered_while_the_client_is_still_sending() -> None:
    """A client that writes its whole body before reading must read the 413, not a reset."""
    async def run(port_box: list[int], stop: asyncio.Event) -> None:
        cfg = config.load(None, env={"TG_SERVER__MAX_REQUEST_BYTES": "4096"})
        bus = MemoryBus()
        batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0.0)
        h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
        server = await httpserver.serve(h, "127.0.0.1", 0, max_body=4096, too_large=h.too_large)
        port_box.append(server.port)
        await stop.wait()
        await server.shutdown(1.0)
        await batcher.close()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    port_box: list[int] = []
    thread = threading.Thread(target=loop.run_until_complete, args=(run(port_box, stop),))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not port_box and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(5):  # the reset race does not show every time
            with socket.create_connection(("127.0.0.1", port_box[0]), timeout=5) as sock:
                sock.sendall(post(b"\x0a" * (2 * 1024 * 1024)))  # 2 MiB against a 4 KiB cap
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
            assert b"x-correlation-id" in answer
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


async def test_client_giving_up_mid_body_is_counted_and_logged_without_traceback(
        gw: Gw, caplog: pytest.LogCaptureFixture) -> None:
    before = _incomplete("body", "client_closed")
    _reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 100)
    await writer.drain()

    async def half_received() -> bool:
        return any(c._body_len > 0 for c in gw.server.connections)

    await await_for(half_received, within=5, interval=0.01, what="the body in progress")
    with caplog.at_level(logging.WARNING, logger="gateway.receivers.httpserver"):
        writer.close()

        async def counted() -> bool:
            return _incomplete("body", "client_closed") == before + 1

        await await_for(counted, within=5, interval=0.01, what="the abandoned request counted")
    records = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert records and records[0].levelno == logging.WARNING and records[0].exc_info is None


async def test_gzip_amplification_is_413_and_many_members_400_both_fast(gw: Gw) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    bomb = gzip.compress(b"\0" * (3 * 1024 * 1024))  # ~3 KiB -> 3 MiB (under the cap), ratio ~1000
    members = gzip.compress(b"") * 3000
    for body, status in ((bomb, 413), (members, 400)):
        started = time.monotonic()
        writer.write(post(body, extra=b"Content-Encoding: gzip\r\n"))
        got, _, _ = await read_response(reader)
        assert got == status
        assert time.monotonic() - started < 0.5
    assert gw.bus.end_offset == 0
    writer.close()
