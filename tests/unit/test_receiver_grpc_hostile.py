"""OTLP/gRPC edges on a loopback port: missing, truncated and extra messages, compression
bombs and encodings (gzip and deflate inflated here, names grpc does not know), clients that
cancel. The real grpc.aio server, Ingest and Batcher behind it.

Truncated messages and unknown ``grpc-encoding`` names cannot be sent with grpc's own client;
those calls are made with ``curl --http2-prior-knowledge`` (skipped where curl lacks HTTP/2).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import shutil
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from bus.memory import MemoryBus
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers import otlp_grpc
from gateway.tenancy import Authenticator, RateLimiter
from otlp.signals import Signal
from settings import config
from tests.otlp_payloads import payload
from tests.waiting import await_for

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Gw:
    def __init__(self, port: int, ingest: Ingest) -> None:
        self.port = port
        self.ingest = ingest
        self.target = f"127.0.0.1:{port}"


@pytest.fixture
async def gw() -> AsyncIterator[Gw]:
    cfg = config.load(None, env={"TG_SERVER__HOST": "127.0.0.1", "TG_SERVER__GRPC_PORT": "0",
                                 "TG_BATCH__MAX_AGE_MS": "0"})
    bus = MemoryBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0.0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    server, port = await otlp_grpc.serve(ingest, cfg.server, reuse_port=False)
    yield Gw(port, ingest)
    await server.stop(None)
    await batcher.close()


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_refused_requests_total",
                                     {"signal": "traces", "transport": "grpc", "reason": reason}) or 0.0


async def _call(gw: Gw, messages: list[bytes],
                compression: grpc.Compression | None = None) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(gw.target) as channel:
        try:
            await channel.stream_unary(TRACE_EXPORT)(iter(messages), timeout=10, compression=compression)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def test_no_message_is_invalid_argument(gw: Gw) -> None:
    before = _refused("malformed")
    err = await _call(gw, [])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no complete request message" in (err.details() or "")
    assert _refused("malformed") == before + 1


async def test_an_oversized_message_is_resource_exhausted_and_counted_too_large(gw: Gw) -> None:
    before = _refused("too_large")
    err = await _call(gw, [b"\x0a" * (9 << 20)])  # over max_request_bytes (8 MiB) as sent
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    async def counted() -> bool:
        return _refused("too_large") == before + 1

    await await_for(counted, within=5, interval=0.01, what="the oversized message counted too_large")


async def test_a_second_message_on_unary_export_is_invalid_argument(gw: Gw) -> None:
    body = payload(Signal.TRACES, spans_per_request=1)
    err = await _call(gw, [body, body])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than one request message" in (err.details() or "")


async def test_gzip_messages_are_inflated_here(gw: Gw) -> None:
    assert await _call(gw, [payload(Signal.TRACES, spans_per_request=8)], grpc.Compression.Gzip) is None


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_amplification_is_resource_exhausted_without_retry_info_and_fast(
        gw: Gw, compression: grpc.Compression) -> None:
    before = _refused("too_large")
    started = time.monotonic()
    err = await _call(gw, [b"\0" * (32 << 20)], compression)  # ~32 KiB on the wire
    took = time.monotonic() - started
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ratio" in (err.details() or "")
    st = status_pb2.Status()
    st.ParseFromString(dict(err.trailing_metadata() or ())["grpc-status-details-bin"])
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in st.details)  # not retryable
    assert _refused("too_large") == before + 1
    assert took < 2.0, took  # includes the client compressing 32 MiB


async def test_many_gzip_members_are_invalid_argument_fast(gw: Gw) -> None:
    body = gzip.compress(b"") * 400_000  # 8,000,000 bytes of empty members, sent as they are
    started = time.monotonic()
    err = await _call(gw, [body])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gzip members" in (err.details() or "")
    assert time.monotonic() - started < 2.0


async def test_deflate_messages_are_inflated_here(gw: Gw) -> None:
    assert await _call(gw, [payload(Signal.TRACES, spans_per_request=8)], grpc.Compression.Deflate) is None


async def test_a_request_that_only_looks_like_zlib_is_ingested_as_sent(gw: Gw) -> None:
    """0x78 0x01 is a zlib header and also field 15 (undefined, kept as sent) = 1: not deflate."""
    labels = {"signal": "traces", "transport": "grpc", "tenant": "default"}
    before = REGISTRY.get_sample_value("gateway_received_items_total", labels) or 0.0
    body = b"\x78\x01" + payload(Signal.TRACES, spans_per_request=2)
    assert await _call(gw, [body]) is None
    assert REGISTRY.get_sample_value("gateway_received_items_total", labels) == before + 2


def _curl(port: int, frame: bytes, *headers: str) -> dict[str, str]:
    """A raw gRPC call: one HTTP/2 POST whose body is ``frame``; the response headers+trailers.

    Retried (3 times) when curl gets no answer at all: when grpc refuses a call while curl is
    still sending, curl sometimes reports the stream reset instead of the trailers it received.
    """
    answer: dict[str, str] = {}
    for _ in range(3):
        out = subprocess.run(
            ["curl", "-s", "-m", "10", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge",
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             *(a for h in headers for a in ("-H", h)),
             "--data-binary", "@-", f"http://127.0.0.1:{port}{TRACE_EXPORT}"],
            input=frame, capture_output=True, timeout=20, check=False)
        lines = out.stdout.decode("latin-1").splitlines()
        answer = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}
        if "grpc-status" in answer:
            break
    return answer


@pytest.fixture
def curl_http2() -> Iterator[None]:
    curl = shutil.which("curl")
    if curl is None or "HTTP2" not in subprocess.run([curl, "--version"], capture_output=True,
                                                     text=True, check=False).stdout:
        pytest.fail("needs curl with HTTP/2 for raw gRPC calls: apt-get install -y curl")
    yield


async def test_truncated_message_is_invalid_argument(gw: Gw, curl_http2: None) -> None:
    body = payload(Signal.TRACES, spans_per_request=1)
    frame = b"\x00" + struct.pack(">I", len(body) + 100) + body  # promises 100 bytes more than sent
    trailers = await asyncio.to_thread(_curl, gw.port, frame)
    assert trailers.get("grpc-status") == str(grpc.StatusCode.INVALID_ARGUMENT.value[0]), trailers


@pytest.mark.parametrize("name", ["zstd", "snappy"])
async def test_unknown_encoding_is_refused_by_grpc_as_internal(gw: Gw, curl_http2: None, name: str) -> None:
    """grpc-python knows only identity, gzip and deflate, and its header parser answers INTERNAL
    for any other grpc-encoding before a handler runs (UNIMPLEMENTED would be the right code):
    a refusal, never an OK."""
    frame = b"\x01" + struct.pack(">I", 3) + b"abc"
    trailers = await asyncio.to_thread(_curl, gw.port, frame, f"grpc-encoding: {name}")
    assert trailers.get("grpc-status") == str(grpc.StatusCode.INTERNAL.value[0]), trailers


def _cancelled() -> float:
    name = "gateway_incomplete_requests_total"
    labels = [{"transport": "grpc", "stage": stage, "cause": "client_closed"} for stage in ("body", "answer")]
    return sum(REGISTRY.get_sample_value(name, lbl) or 0.0 for lbl in labels)


async def test_client_cancel_mid_request_is_counted_and_logged_without_traceback(
        gw: Gw, caplog: pytest.LogCaptureFixture) -> None:
    before = _cancelled()
    hold = asyncio.Event()

    async def one_then_wait() -> AsyncIterator[bytes]:
        yield payload(Signal.TRACES, spans_per_request=1)
        await hold.wait()  # never half-closes: the server waits for the end of the request

    with caplog.at_level(logging.WARNING, logger="gateway.receivers.otlp_grpc"):
        async with grpc.aio.insecure_channel(gw.target) as channel:
            call = channel.stream_unary(TRACE_EXPORT)(one_then_wait(), timeout=10)
            await call.initial_metadata()  # the server's handler is running
            call.cancel()

            async def counted() -> bool:
                return _cancelled() == before + 1

            await await_for(counted, within=5, interval=0.02, what="the cancelled request counted")
        hold.set()
    records = [r for r in caplog.records if "cancelled" in r.getMessage()]
    assert records and records[0].levelno == logging.WARNING and records[0].exc_info is None
