"""HTTP receiver deadlines on a real loopback socket: what a late request is answered, and under
which stage it is counted, whichever of ``read_header_timeout_s`` / ``read_timeout_s`` is shorter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from bus.memory import MemoryBus
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers import httpserver
from gateway.receivers.otlp_http import OtlpHttp
from gateway.tenancy import Authenticator, RateLimiter
from settings import config
from tests.unit.test_receiver_http_protocol import _incomplete, read_response


@asynccontextmanager
async def gateway(read_header_s: str, read_s: str) -> AsyncIterator[int]:
    """A receiver with these deadlines; yields its port."""
    cfg = config.load(None, env={"TG_SERVER__READ_HEADER_TIMEOUT_S": read_header_s,
                                 "TG_SERVER__READ_TIMEOUT_S": read_s, "TG_BATCH__MAX_AGE_MS": "0"})
    batcher = Batcher(MemoryBus().publish, cfg.batch.max_bytes, 0.0)
    h = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
    server = await httpserver.serve(h, "127.0.0.1", 0, max_body=cfg.server.max_request_bytes,
                                    too_large=h.too_large)
    try:
        yield server.port
    finally:
        await server.shutdown(1.0)
        await batcher.close()


def _from_protobuf(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


def _from_json(body: bytes) -> status_pb2.Status:
    return json_format.Parse(body, status_pb2.Status())


@pytest.mark.parametrize(("content_type", "decode"), [
    ("application/x-protobuf", _from_protobuf),
    ("application/json", _from_json),
])
async def test_stalled_body_gets_408_status_in_the_request_encoding(
        content_type: str, decode: Callable[[bytes], status_pb2.Status]) -> None:
    async with gateway("0.3", "0.5") as port:
        before = _incomplete("body", "timeout")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     "Content-Length: 100\r\n\r\nab".encode())
        status, headers, body = await read_response(reader)
        assert status == 408 and headers["content-type"] == content_type
        st = decode(body)
        assert st.code == code_pb2.DEADLINE_EXCEEDED
        assert st.message == "request body not received within 0.5 s"
        assert _incomplete("body", "timeout") == before + 1
        writer.close()


async def test_unfinished_head_is_reported_as_head_when_read_timeout_is_shorter() -> None:
    async with gateway("5", "0.3") as port:
        head_before, body_before = _incomplete("head", "timeout"), _incomplete("body", "timeout")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/traces HTTP/1.1\r\nContent-Type: applic")
        status, headers, body = await read_response(reader)
        # No complete head, so no encoding to answer in: plain text.
        assert status == 408 and headers["content-type"].startswith("text/plain")
        assert body == b"request head not received within 0.3 s\n"
        assert _incomplete("head", "timeout") == head_before + 1
        assert _incomplete("body", "timeout") == body_before
        writer.close()
