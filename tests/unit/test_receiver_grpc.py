"""OTLP/gRPC on a loopback port: the real grpc.aio server, Ingest and Batcher behind it."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import REGISTRY

from bus.contract import Batch
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.receivers import otlp_grpc
from gateway.tenancy import Authenticator, RateLimiter
from otlp.signals import Signal
from settings import config
from tests.otlp_payloads import payload
from tests.waiting import await_for

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_refused_requests_total",
                                     {"signal": "traces", "transport": "grpc", "reason": reason}) or 0.0


async def test_grpc_refuses_beyond_max_concurrent_requests_as_overloaded_and_counts_it() -> None:
    gate = asyncio.Event()

    async def stalled(batch: Batch) -> None:
        await gate.wait()

    cfg = config.load(None, env={"TG_SERVER__HOST": "127.0.0.1", "TG_SERVER__GRPC_PORT": "0",
                                 "TG_SERVER__MAX_CONCURRENT_REQUESTS": "1", "TG_BATCH__MAX_AGE_MS": "0"})
    batcher = Batcher(stalled, cfg.batch.max_bytes, 0.0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    server, port = await otlp_grpc.serve(ingest, cfg.server, reuse_port=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            body = payload(Signal.TRACES, spans_per_request=2)
            first = asyncio.ensure_future(export(body, timeout=10))

            async def first_in_flight() -> bool:
                return ingest.inflight == 1

            await await_for(first_in_flight, within=5, what="the first export in flight")
            before = _refused("overloaded")
            try:
                await export(body, timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE  # retryable, as OTLP asks
                assert "too many concurrent requests" in (exc.details() or "")
            else:
                raise AssertionError("the second concurrent export was accepted")
            assert _refused("overloaded") == before + 1
            gate.set()
            await first
    finally:
        gate.set()
        await server.stop(None)
        await batcher.close()
