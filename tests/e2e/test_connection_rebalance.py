"""Long-lived clients spread over the gateway's processes once connections have a limited life.

Two workers share the OTLP ports through SO_REUSEPORT, as replicas share an L4 balancer's
address: the kernel picks a worker per new connection. One SDK exporter keeps one gRPC channel
(or one HTTP keep-alive session) and exports again and again; with
``server.grpc.keepalive.server_parameters.max_connection_age_s`` (GOAWAY) or
``server.http.max_connection_age_s`` / ``max_requests_per_connection`` (``Connection: close``)
the client reconnects and its items land in both workers' file-sink files, every one of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from pipelines.sinks.file import complete_lines
from tests.gateway_process import GatewayProcess, running_gateway, sink_items
from tests.sdk_otlp import client_resource, finished_spans
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

_KEEPALIVE = "TG_SERVER__GRPC__KEEPALIVE__SERVER_PARAMETERS__"
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "grpc-max-connection-age": ("grpc", {_KEEPALIVE + "MAX_CONNECTION_AGE_S": "0.5",
                                         _KEEPALIVE + "MAX_CONNECTION_AGE_GRACE_S": "1"}),
    "http-max-connection-age": ("http", {"TG_SERVER__HTTP__MAX_CONNECTION_AGE_S": "0.5"}),
    "http-max-requests": ("http", {"TG_SERVER__HTTP__MAX_REQUESTS_PER_CONNECTION": "3"}),
}


def _spans_per_worker(gw: GatewayProcess) -> list[int]:
    counts = []
    for path in gw.sink_files("default", "traces"):
        lines = [json.loads(line) for line in complete_lines(path)]
        counts.append(len(sink_items(lines, "traces")))
    return counts


@pytest.mark.parametrize("case", list(CASES))
def test_one_long_lived_client_spreads_over_both_workers(case: str) -> None:
    transport, env = CASES[case]
    spans, _ = finished_spans(client_resource("rebalance"), traces=1, children=2)
    with running_gateway(env, workers=2) as gw:
        exporter: Any = (GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True, timeout=10)
                         if transport == "grpc" else
                         HttpSpanExporter(endpoint=gw.http_url + "/v1/traces", timeout=10))
        sent = 0

        def export_then_both_workers_have_spans() -> bool:
            nonlocal sent
            result = exporter.export(spans)
            assert result == SpanExportResult.SUCCESS, f"export {sent // len(spans) + 1} failed:\n{gw.log()}"
            sent += len(spans)
            counts = _spans_per_worker(gw)
            return len(counts) == 2 and min(counts) > 0

        try:
            wait_for(export_then_both_workers_have_spans, within=60, interval=0.01,
                     what=f"one {transport} client's spans in both workers' files")
        finally:
            exporter.shutdown()
        # Nothing lost or doubled while connections were being closed under the client.
        wait_for(lambda: sum(_spans_per_worker(gw)) >= sent, within=15, what=f"{sent} spans in the sink")
        counts = _spans_per_worker(gw)
        assert sum(counts) == sent, f"sent {sent} spans, the workers wrote {counts}"
        assert gw.metric("gateway_received_items_total", signal="traces") == sent


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_without_a_connection_limit_the_client_stays_on_one_worker(transport: str) -> None:
    """The control: the spreading above comes from the limits, not from the kernel."""
    env = {_KEEPALIVE + "MAX_CONNECTION_AGE_S": "0", "TG_SERVER__HTTP__MAX_CONNECTION_AGE_S": "0"}
    spans, _ = finished_spans(client_resource("rebalance"), traces=1, children=2)
    with running_gateway(env, workers=2) as gw:
        exporter: Any = (GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True, timeout=10)
                         if transport == "grpc" else
                         HttpSpanExporter(endpoint=gw.http_url + "/v1/traces", timeout=10))
        try:
            for _ in range(40):
                assert exporter.export(spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        sent = 40 * len(spans)
        wait_for(lambda: sum(_spans_per_worker(gw)) >= sent, within=15, what=f"{sent} spans in the sink")
        assert sorted(_spans_per_worker(gw)) in ([sent], [0, sent]), _spans_per_worker(gw)
