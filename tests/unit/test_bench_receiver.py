"""Speed of the OTLP/HTTP receiver around the ingest middle, per 512-span request.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_receiver.py --benchmark-enable --benchmark-only
``test_bench_http_request_*`` is a whole request through the HTTP protocol object (parse,
handler, Ingest, Batcher, render) minus the socket; compare with ``wire.prepare`` alone in
test_bench_ingest_path.py to see what the edge adds.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers.compression import gunzip
from gateway.receivers.httpserver import HttpProtocol, HttpServer
from gateway.receivers.otlp_http import OtlpHttp
from gateway.tenancy import Authenticator, RateLimiter
from otlp.signals import Signal
from settings import config
from tests.otlp_payloads import payload

TRACES_512 = payload(Signal.TRACES, spans_per_request=512, attributes=10)
TRACES_512_GZ = gzip.compress(TRACES_512)

pytestmark = pytest.mark.benchmark(group="receiver", min_rounds=20)


class _Sink(asyncio.Transport):
    """Transport that keeps only the last response line."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data[:15])

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def _no_op_publish(batch: Batch) -> None:
    return None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _request(body: bytes, gz: bool) -> bytes:
    head = (b"POST /v1/traces HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-protobuf\r\n"
            + (b"Content-Encoding: gzip\r\n" if gz else b"")
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


@pytest.mark.parametrize("gz", [False, True], ids=["identity", "gzip"])
def test_bench_http_request_512_spans(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop,
                                      gz: bool) -> None:
    cfg = config.load(None, env={"TG_ACK": "accepted"})
    wire_request = _request(TRACES_512_GZ if gz else TRACES_512, gz)

    async def setup() -> tuple[HttpProtocol, _Sink, Batcher]:
        batcher = Batcher(_no_op_publish, cfg.batch.max_bytes, cfg.batch.max_age_ms / 1000)
        handler = OtlpHttp(Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), cfg.server)
        proto = HttpProtocol(HttpServer(handler, max_body=cfg.server.max_request_bytes,
                                        too_large=handler.too_large))
        transport = _Sink()
        proto.connection_made(transport)
        return proto, transport, batcher

    proto, transport, batcher = loop.run_until_complete(setup())

    async def one() -> None:
        proto.data_received(wire_request)
        task = proto.in_flight()
        assert task is not None
        await task

    benchmark(lambda: loop.run_until_complete(one()))
    assert transport.last == b"HTTP/1.1 200 OK"
    loop.run_until_complete(batcher.close())


def test_bench_gunzip_512_spans(benchmark: BenchmarkFixture) -> None:
    assert benchmark(gunzip, TRACES_512_GZ, 32 * 1024 * 1024) == TRACES_512
