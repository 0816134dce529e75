"""OTLP/HTTP handling without sockets: the real Ingest, Batcher and MemoryBus behind it.

The protocol class is fed bytes through a recording transport, so framing, early 413 and
keep-alive are checked without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bus.contract import Batch, BusUnavailable
from bus.memory import MemoryBus
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers.httpserver import HttpProtocol, HttpServer, Request
from gateway.receivers.otlp_http import OtlpHttp
from gateway.tenancy import Authenticator, RateLimiter
from settings import config
from tests.waiting import await_for

PB = {"content-type": "application/x-protobuf"}


def spans(n: int) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        scope.spans.add(name=f"s{i}", trace_id=b"\1" * 16, span_id=b"\2" * 8)
    return req.SerializeToString()


@contextlib.asynccontextmanager
async def otlp_http(max_request: int, max_decompressed: int) -> AsyncIterator[tuple[OtlpHttp, MemoryBus]]:
    """The OTLP/HTTP handler with these size caps, on the real Ingest, Batcher and MemoryBus."""
    cfg = config.load(None, env={"TG_SERVER__MAX_REQUEST_BYTES": str(max_request),
                                 "TG_SERVER__MAX_DECOMPRESSED_BYTES": str(max_decompressed),
                                 "TG_BATCH__MAX_AGE_MS": "0"})
    bus = MemoryBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0.0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    try:
        yield OtlpHttp(ingest, cfg.server), bus
    finally:
        await batcher.close()


@pytest.fixture
async def handler() -> AsyncIterator[tuple[OtlpHttp, MemoryBus]]:
    async with otlp_http(4096, 8192) as pair:
        yield pair


async def test_protobuf_ok_is_published(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, bus = handler
    resp = await h(Request("POST", "/v1/traces", dict(PB), spans(3)))
    assert (resp.status, resp.body, resp.content_type) == (200, b"", "application/x-protobuf")
    assert dict(resp.headers)["x-correlation-id"]
    assert bus.end_offset == 1


async def test_gzip_body(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, bus = handler
    resp = await h(Request("POST", "/v1/traces", {**PB, "content-encoding": "gzip"}, gzip.compress(spans(2))))
    assert resp.status == 200
    assert bus.end_offset == 1


async def test_inflated_size_cap(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, bus = handler
    body = gzip.compress(b"\0" * 9000)
    resp = await h(Request("POST", "/v1/traces", {**PB, "content-encoding": "gzip"}, body))
    assert resp.status == 413
    assert bus.end_offset == 0


async def test_partial_success_is_reported(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    bad_resource = b"\x0a\x02\x10\x01"  # a ResourceSpans whose scope_spans is a varint
    resp = await h(Request("POST", "/v1/traces", dict(PB), spans(2) + bad_resource))
    assert resp.status == 200
    out = ExportTraceServiceResponse()
    out.ParseFromString(resp.body)
    assert out.partial_success.error_message


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("POST", "/v1/traces", {"content-type": "text/plain"}, 415),
    ("POST", "/v1/traces", {**PB, "content-encoding": "br"}, 415),
    ("POST", "/v1/nope", dict(PB), 404),
    ("PUT", "/v1/logs", dict(PB), 405),
    ("POST", "/v1/metrics", dict(PB), 400),
    ("POST", "/v1/metrics", {"content-type": "application/json"}, 400),
])
async def test_refusals(handler: tuple[OtlpHttp, MemoryBus], method: str, path: str,
                        headers: dict[str, str], status: int) -> None:
    h, bus = handler
    resp = await h(Request(method, path, headers, b"\xff\xff not a request"))
    assert resp.status == status
    if resp.content_type == "application/x-protobuf":
        st = status_pb2.Status()
        st.ParseFromString(resp.body)
        assert st.message
    assert bus.end_offset == 0


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.out += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def _settle(transport: RecordingTransport, marker: bytes, count: int = 1) -> None:
    async def seen() -> bool:
        return transport.out.count(marker) >= count

    await await_for(seen, within=5, interval=0.005, what=f"{count} x {marker!r} written")


async def test_protocol_keep_alive_and_pipelining(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    proto = HttpProtocol(HttpServer(h, max_body=4096, too_large=h.too_large))
    t = RecordingTransport()
    proto.connection_made(t)
    body = spans(1)
    req = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    proto.data_received(req + req)  # two pipelined requests in one read
    await _settle(t, b"HTTP/1.1 200 OK", 2)
    assert not t.closed and not t.paused


async def test_protocol_refuses_declared_oversize_early(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    proto = HttpProtocol(HttpServer(h, max_body=4096, too_large=h.too_large))
    t = RecordingTransport()
    proto.connection_made(t)
    proto.data_received(b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                        b"Content-Length: 999999\r\n\r\n")
    assert t.out.startswith(b"HTTP/1.1 413 ")
    assert t.eof  # half-closed: the rest of the body is drained, then the connection closed


async def test_protocol_bad_http_is_400(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    proto = HttpProtocol(HttpServer(h, max_body=4096, too_large=h.too_large))
    t = RecordingTransport()
    proto.connection_made(t)
    proto.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert t.out.startswith(b"HTTP/1.1 400 ")
    assert t.eof


def _connect(server: HttpServer) -> tuple[HttpProtocol, RecordingTransport]:
    proto = HttpProtocol(server)
    t = RecordingTransport()
    proto.connection_made(t)
    return proto, t


async def test_oversized_head_is_431(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    _proto, t = _connect(HttpServer(h, max_body=4096, too_large=h.too_large))
    _proto.data_received(b"POST /v1/traces HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert t.out.startswith(b"HTTP/1.1 431 ")
    assert t.eof


async def test_idle_connections_are_swept(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    server = HttpServer(h, max_body=4096, too_large=h.too_large, idle_timeout_s=0.0)
    _proto, t = _connect(server)
    server._sweep()
    assert t.closed


async def test_shutdown_answers_in_flight_closes_idle(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    server = HttpServer(h, max_body=4096, too_large=h.too_large)
    busy, t_busy = _connect(server)
    _idle, t_idle = _connect(server)
    body = spans(1)
    busy.data_received(b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await server.shutdown(grace_s=5)
    assert t_idle.closed and not t_idle.out
    assert t_busy.out.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in t_busy.out
    assert t_busy.closed


async def test_expect_100_continue(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, _bus = handler
    proto, t = _connect(HttpServer(h, max_body=4096, too_large=h.too_large))
    body = spans(1)
    proto.data_received(b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    assert t.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(body)
    await _settle(t, b"HTTP/1.1 200 OK")


async def test_bus_unavailable_is_503_with_retry_after() -> None:
    async def down(batch: Batch) -> None:
        raise BusUnavailable("broker gone", retry_after_s=5.0)

    cfg = config.load(None, env={"TG_BATCH__MAX_AGE_MS": "0"})
    batcher = Batcher(down, cfg.batch.max_bytes, 0.0)
    h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
    resp = await h(Request("POST", "/v1/traces", dict(PB), spans(2)))
    assert resp.status == 503
    assert dict(resp.headers)["Retry-After"] == "5"
    st = status_pb2.Status()
    st.ParseFromString(resp.body)
    assert "broker gone" in st.message
    await batcher.close()


def _chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def test_chunked_body_and_its_cap(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, bus = handler
    server = HttpServer(h, max_body=4096, too_large=h.too_large)
    head = (b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    proto, t = _connect(server)
    proto.data_received(head + _chunked(spans(2), 7))
    await _settle(t, b"HTTP/1.1 200 OK")
    assert bus.end_offset == 1

    proto, t = _connect(server)
    proto.data_received(head + _chunked(b"\x0a" * 5000, 1000))  # no Content-Length to check first
    assert t.out.startswith(b"HTTP/1.1 413 ") and t.eof
    assert bus.end_offset == 1


async def test_overloaded_gateway_refuses_before_inflating_the_body() -> None:
    gate = asyncio.Event()

    async def stalled(batch: Batch) -> None:
        await gate.wait()

    cfg = config.load(None, env={"TG_ACK": "accepted", "TG_BATCH__MAX_PENDING_BYTES": "1"})
    batcher = Batcher(stalled, cfg.batch.max_bytes, 3600.0)
    h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
    assert (await h(Request("POST", "/v1/traces", dict(PB), spans(1)))).status == 200  # budget now spent
    not_gzip = {**PB, "content-encoding": "gzip"}
    resp = await h(Request("POST", "/v1/traces", not_gzip, b"certainly not gzip"))
    assert resp.status == 503  # not the 400 that inflating it would have given
    assert dict(resp.headers)["Retry-After"] == "1"
    gate.set()
    await batcher.close()
