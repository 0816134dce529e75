"""Kafka outage: refuse retryably, stay up, explain in /readyz, deliver everything once Kafka is back.

Runs its own broker (``PrivateKafka``) so stopping it disturbs no other test. The gateway starts
while that broker is still down (it must start anyway, unready), then the broker comes up, goes
down mid-traffic and comes back. Exports made during the outage are retried by the SDK's own
exporters (HTTP 503 / gRPC UNAVAILABLE are retryable for them) and are counted at the sink by
a pipelines worker that ran through the whole outage (its consumer and commits must survive it).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp.signals import Signal
from tests import otlp_payloads
from tests.e2e.kafka_pipeline import Clients, PipelineProcess, kafka_env, missing, received, unique_prefix
from tests.e2e.private_kafka import PrivateKafka
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


class StartsUnready(GatewayProcess):
    """A gateway whose start counts as done once /readyz answers at all (503 while Kafka is down)."""

    starting = True

    def readyz(self) -> tuple[int, str]:
        status, body = super().readyz()
        if self.starting and status == 503:
            return 200, body
        return status, body


def post_traces(gw: GatewayProcess) -> tuple[int, str]:
    body = otlp_payloads.payload(Signal.TRACES, spans_per_request=5)
    req = urllib.request.Request(gw.http_url + "/v1/traces", data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Retry-After", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After", "")


def grpc_traces(gw: GatewayProcess) -> grpc.StatusCode:
    req = ExportTraceServiceRequest.FromString(otlp_payloads.payload(Signal.TRACES, spans_per_request=5))
    with grpc.insecure_channel(gw.grpc_target) as channel:
        try:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_outage_refuses_retryably_and_sdk_retries_deliver_everything() -> None:
    broker = PrivateKafka()
    prefix = unique_prefix("outage")
    env = kafka_env(broker.bootstrap, prefix, TG_BUS__KAFKA__PUBLISH_TIMEOUT_MS="2000",
                    TG_BUS__KAFKA__START_WAIT_MS="200", TG_BUS__KAFKA__RECONNECT_BACKOFF_MAX_MS="500",
                    TG_BUS__KAFKA__HEALTH_CHECK_INTERVAL_MS="1000")
    gw = StartsUnready(env)
    workers: list[PipelineProcess] = []
    try:
        # 1. Kafka down from the start: the gateway starts anyway, unready, and refuses retryably.
        gw.start()
        gw.starting = False
        status, why = gw.readyz()
        assert status == 503 and "kafka" in why, (status, why)
        assert post_traces(gw)[0] == 503
        assert grpc_traces(gw) == grpc.StatusCode.UNAVAILABLE

        # 2. Kafka comes up: the gateway connects by itself and acknowledges. A pipelines worker
        # runs from here on, through the outage, and must survive it.
        broker.start()
        pipeline = PipelineProcess(env).start()
        workers.append(pipeline)
        wait_for(lambda: gw.readyz()[0] == 200, within=60, what="gateway ready once Kafka is up")
        clients = Clients(gw, timeout_s=90)
        clients.round()
        assert clients.sent.refused_exports == 0

        # 3. Kafka goes away: /readyz notices without traffic (health check), then requests get
        # a quick 503 / UNAVAILABLE and the process stays up.
        broker.stop()
        wait_for(lambda: gw.readyz()[0] == 503, within=30, what="/readyz 503 once Kafka is gone")
        status, why = gw.readyz()
        assert "kafka" in why, why
        assert post_traces(gw)[0] == 503
        assert grpc_traces(gw) == grpc.StatusCode.UNAVAILABLE
        assert gw.metric("gateway_kafka_produce_errors_total") > 0
        assert gw.proc is not None and gw.proc.poll() is None

        # 4. Exports made during the outage are retried by the SDK until Kafka is back. The
        # broker is spawned first because the SDK's HTTP exporters honour our Retry-After (1 s)
        # for only a few retries, less than a JVM's start; the exports still begin while it is down.
        refusals = "gateway_refused_requests_total"
        refused_before = gw.metric(refusals, reason="bus_unavailable")
        broker.spawn()
        with ThreadPoolExecutor(max_workers=6) as pool:
            pending = [pool.submit(fn, transport) for transport in ("grpc", "http")
                       for fn in (clients.spans, clients.logs, clients.metrics)]
            broker.wait_ready()
            results = [f.result(timeout=120) for f in pending]
        assert all(results), f"{results.count(False)} export(s) failed even after Kafka returned"
        refused_during = gw.metric(refusals, reason="bus_unavailable") - refused_before
        assert refused_during >= 6, f"only {refused_during} refusals: the exports did not meet the outage"
        wait_for(lambda: gw.readyz()[0] == 200, within=30, what="gateway ready again")

        # 5. Everything acknowledged is in Kafka, and the worker that lived through the outage
        # delivers all of it.
        wait_for(lambda: missing(clients.sent, received(pipeline)) == 0, within=90,
                 what="every acknowledged item at the sink after the outage")
        assert pipeline.stop() == 0, pipeline.log()
        assert gw.stop() == 0, gw.log()
    finally:
        for worker in workers:
            worker.cleanup()
        gw.cleanup()
        broker.cleanup()
