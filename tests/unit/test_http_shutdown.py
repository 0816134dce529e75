"""HTTP receiver shutdown on a real loopback socket: a request partly received when the stop
begins is left to finish and answered, not cut with a reset; an idle connection is closed."""

from __future__ import annotations

import asyncio

from google.rpc import status_pb2

from bus.memory import MemoryBus
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers import httpserver
from gateway.receivers.otlp_http import OtlpHttp
from gateway.tenancy import Authenticator, RateLimiter
from settings import config
from tests.unit.test_receiver_http import spans
from tests.unit.test_receiver_http_protocol import read_response
from tests.waiting import await_for


async def test_request_partly_received_at_shutdown_is_answered_not_cut() -> None:
    cfg = config.load(None, env={"TG_BATCH__MAX_AGE_MS": "0"})
    batcher = Batcher(MemoryBus().publish, cfg.batch.max_bytes, 0.0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    h = OtlpHttp(ingest, cfg.server)
    server = await httpserver.serve(h, "127.0.0.1", 0, max_body=cfg.server.max_request_bytes,
                                    too_large=h.too_large)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = spans(3)
    writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    async def receiving() -> bool:
        return sum(c.busy() for c in server.connections) == 1

    await await_for(receiving, what="the request being received")
    ingest.close_intake()  # as the worker does first when it stops
    stopping = asyncio.create_task(server.shutdown(5.0))
    assert await asyncio.wait_for(idle_r.read(), 5) == b""  # the idle connection: closed at once
    assert not stopping.done()
    writer.write(body[10:])
    status, headers, answer = await read_response(reader)
    assert status == 503 and headers["connection"] == "close"
    assert status_pb2.Status.FromString(answer).message
    await asyncio.wait_for(stopping, 5)
    assert not server.connections
    idle_w.close()
    writer.close()
    await batcher.close()
