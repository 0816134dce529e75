"""``--sink jaeger``: the OTLP/gRPC forwarding sink (``pipelines.sinks.otlp_grpc``), traces only,
to Jaeger's OTLP receiver at ``pipelines.jaeger.endpoint``. Nothing here is specific to Jaeger
but the preset and the ``pipeline_jaeger_*`` counters kept for existing dashboards.

What was verified against Jaeger 2.13 (the stack's): bytes that are not a protobuf never reach
the receiver's code, grpc-go answers ``INTERNAL "grpc: error unmarshalling request: ..."``, which
the shared gRPC classifier takes as refused data (otherwise one garbage record would block the
partition forever). Jaeger refuses a 15-byte trace id with ``INVALID_ARGUMENT``, found by halves
and dead-lettered alone. It does not refuse a span name or attribute that is not UTF-8: it
stores the span with the name ``invalid-span-name`` and the original bytes in a binary tag of
that name, so such a span is kept, marked, and not dead-lettered. Jaeger does not deduplicate,
so nothing accepted is sent twice. The tenant travels inside, as the ``tenant.id`` resource
attribute the gateway set (a process tag in Jaeger).
"""

from __future__ import annotations

from otlp.signals import Signal
from pipelines.metrics import JAEGER_REJECTED_SPANS, JAEGER_REQUESTS
from pipelines.sinks import backend_auth
from pipelines.sinks.otlp_forward import Sent, join_records
from pipelines.sinks.otlp_grpc import OtlpGrpcSink
from settings.config import Config, TlsClientConfig

__all__ = ["JaegerSink", "join_records", "make_sink"]


class JaegerSink(OtlpGrpcSink):
    """The OTLP/gRPC forwarding sink, traces only, named ``jaeger``."""

    def __init__(self, endpoint: str, *, timeout_s: float = 10.0, concurrency: int = 4,
                 max_request_bytes: int = 3 * 1024 * 1024, tls: TlsClientConfig | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(endpoint, name="jaeger", signals=frozenset({Signal.TRACES}), timeout_s=timeout_s,
                         concurrency=concurrency, max_request_bytes=max_request_bytes, tls=tls,
                         headers=headers, setting="pipelines.jaeger")

    def _count(self, signal: Signal, sent: Sent) -> None:
        super()._count(signal, sent)
        JAEGER_REQUESTS.labels(sent.code).inc()
        if sent.rejected_items:
            JAEGER_REJECTED_SPANS.inc(sent.rejected_items)


def make_sink(cfg: Config) -> JaegerSink:
    """Entry point for ``telemetry-gateway pipelines --sink jaeger``."""
    c = cfg.pipelines.jaeger
    return JaegerSink(c.endpoint, tls=c.tls,
                      headers=backend_auth.configured_headers("pipelines.jaeger", c))
