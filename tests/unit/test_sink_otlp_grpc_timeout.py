"""``pipelines.otlp_grpc.timeout: 0`` means no deadline, as the Collector's exporterhelper reads a
zero timeout and as the aiohttp sinks (OTLP/HTTP, remote write) read ``ClientTimeout(total=0)``.
A real grpc server on loopback answers the sink's export."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import BusRecord
from otlp.signals import HEADER_TENANT, Signal
from pipelines.sinks.otlp_grpc import OtlpGrpcSink
from settings.config import load


def _span_request() -> bytes:
    """An ExportTraceServiceRequest of one span."""
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "s"
    return req.SerializeToString()


async def _serve(remaining: list[float | None]) -> tuple[grpc.aio.Server, int]:
    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        remaining.append(context.time_remaining())  # None: the call carries no deadline
        return b""  # an empty ExportTraceServiceResponse: all accepted

    handler = grpc.method_handlers_generic_handler(Signal.TRACES.spec.grpc_service, {
        "Export": grpc.unary_unary_rpc_method_handler(export)})
    server = grpc.aio.server(handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.parametrize("timeout", ["0", "0s"])
def test_a_zero_timeout_sends_without_a_deadline(timeout: str) -> None:
    # timeout 0 became grpc's timeout=0, a deadline already passed: every export ended
    # DEADLINE_EXCEEDED and was retried forever while the data waited in Kafka.
    cfg = load(env={"TG_PIPELINES__OTLP_GRPC__TIMEOUT": timeout})
    assert cfg.pipelines.otlp_grpc.timeout_s == 0

    remaining: list[float | None] = []

    async def scenario() -> None:
        server, port = await _serve(remaining)
        sink = OtlpGrpcSink(f"127.0.0.1:{port}", signals=frozenset({Signal.TRACES}),
                            timeout_s=cfg.pipelines.otlp_grpc.timeout_s)
        await sink.start()
        try:
            await sink.write([BusRecord("otlp_spans", 0, 0, None, _span_request(), {HEADER_TENANT: "t"},
                                        Signal.TRACES)])
        finally:
            await sink.stop()
            await server.stop(None)

    asyncio.run(scenario())
    assert remaining == [None]
