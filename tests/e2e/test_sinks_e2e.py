"""SDK exporters -> gateway (Kafka bus) -> Kafka -> ``pipelines --sink X`` workers -> the stores.

The whole path with real parts only: the OpenTelemetry SDK's OTLP exporters (gRPC and
HTTP/protobuf) authenticate with API keys of two tenants; three pipelines workers (one per
sink) consume the same topics in their own consumer groups; Elasticsearch, Jaeger and
Prometheus are read back through their query APIs. Clients put a forged ``tenant.id`` in their
resource; every store must show the tenant of the API key. A histogram recorded inside a span
reaches Prometheus' exemplar storage with that span's trace id.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from functools import partial
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name
from tests import stackenv
from tests.e2e.kafka_pipeline import kafka_env, running_pipeline, unique_prefix
from tests.gateway_process import GatewayProcess, running_gateway
from tests.sdk_otlp import (
    DURATION_VALUES,
    EXEMPLAR_DURATION,
    SCOPE_SCHEMA_URL,
    client_resource,
    exemplar_metrics_data,
    finished_logs,
    finished_spans,
    metrics_data,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0


class Tenant:
    """One tenant: its API key and SDK exporters aimed at the gateway, over one transport."""

    def __init__(self, name: str, key: str, transport: str) -> None:
        self.name, self.key, self.transport = name, key, transport
        self.service = f"svc-{uuid.uuid4().hex[:6]}"

    def send(self, gw: GatewayProcess) -> tuple[int, int, list[str]]:
        """Export spans, logs and metrics once; (spans, log records, trace ids) sent."""
        headers = {"x-api-key": self.key}
        # A forged tenant.id: the stores must show the tenant of the API key instead.
        res = client_resource(self.service, forged_tenant="forged")
        spans, trace_ids = finished_spans(res, traces=3, children=3)
        logs = finished_logs(res, n=4)
        grpc = self.transport == "grpc"
        span_exp = (GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True, headers=headers) if grpc
                    else HttpSpanExporter(endpoint=gw.http_url + "/v1/traces", headers=headers))
        log_exp = (GrpcLogExporter(endpoint=gw.grpc_target, insecure=True, headers=headers) if grpc
                   else HttpLogExporter(endpoint=gw.http_url + "/v1/logs", headers=headers))
        metric_exp = (GrpcMetricExporter(endpoint=gw.grpc_target, insecure=True, headers=headers) if grpc
                      else HttpMetricExporter(endpoint=gw.http_url + "/v1/metrics", headers=headers))
        try:
            assert span_exp.export(spans).name == "SUCCESS"
            assert log_exp.export(logs).name == "SUCCESS"
            assert metric_exp.export(metrics_data(res)).name == "SUCCESS"
        finally:
            span_exp.shutdown()
            log_exp.shutdown()
            metric_exp.shutdown()
        return len(spans), len(logs), trace_ids


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def promql(expr: str) -> list[dict[str, Any]]:
    body = _get_json(f"{stackenv.PROMETHEUS_URL}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return body["data"]["result"] if body and body.get("status") == "success" else []


def prom_exemplars(expr: str, since: float) -> list[dict[str, Any]]:
    """Series with exemplars that ``expr`` selects, from ``since`` (epoch s) to a minute ahead."""
    query = urllib.parse.urlencode({"query": expr, "start": since, "end": time.time() + 60})
    body = _get_json(f"{stackenv.PROMETHEUS_URL}/api/v1/query_exemplars?{query}")
    return body["data"] if body and body.get("status") == "success" else []


def jaeger_trace(trace_id: str, spans: int) -> dict[str, Any] | None:
    """The trace as Jaeger's query API returns it, once it holds ``spans`` spans."""
    body = _get_json(f"{stackenv.JAEGER_QUERY_URL}/api/traces/{trace_id}")
    data = (body or {}).get("data") or []
    return data[0] if data and len(data[0]["spans"]) == spans else None


def es_holds(es: Elasticsearch, index: str, n: int) -> bool:
    if not es.indices.exists(index=index):
        return False
    es.indices.refresh(index=index)
    return int(es.count(index=index).body["count"]) == n


def test_sdk_data_reaches_every_store_through_kafka() -> None:
    stackenv.require("kafka", "elasticsearch", "jaeger", "jaeger-query", "prometheus")
    run = uuid.uuid4().hex[:8]
    prefix = unique_prefix("sinks")
    acme = Tenant(f"E2E-Acme-{run}", f"acmekey{run}", "grpc")
    beta = Tenant(f"e2e-beta-{run}", f"betakey{run}", "http")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix,
                    TG_AUTH__ENABLED="true",
                    TG_PIPELINES__ELASTICSEARCH__HOSTS=stackenv.ES_URL,
                    TG_PIPELINES__JAEGER__ENDPOINT=stackenv.JAEGER_OTLP_GRPC,
                    TG_PIPELINES__PROMETHEUS__URL=stackenv.PROMETHEUS_URL + "/api/v1/write")
    for t in (acme, beta):
        env[f"TG_AUTH__API_KEYS__{t.key}"] = t.name

    with running_gateway(env) as gw, \
            running_pipeline(env, "elasticsearch"), running_pipeline(env, "jaeger"), \
            running_pipeline(env, "prometheus"):
        sent = {t.name: t.send(gw) for t in (acme, beta)}

        es = Elasticsearch(stackenv.ES_URL)
        try:
            for t in (acme, beta):
                spans, logs, trace_ids = sent[t.name]
                traces_index = index_name(Signal.TRACES, t.name)
                logs_index = index_name(Signal.LOGS, t.name)
                wait_for(partial(es_holds, es, traces_index, spans), within=TIMEOUT,
                         what=f"{spans} spans in {traces_index}")
                # Each trace's root span has one event, which is also a log document.
                wait_for(partial(es_holds, es, logs_index, logs + len(trace_ids)), within=TIMEOUT,
                         what=f"{logs} log records and {len(trace_ids)} span events in {logs_index}")
                hit = es.search(index=traces_index, size=1).body["hits"]["hits"][0]["_source"]
                assert hit["resource"]["attributes"]["tenant.id"] == t.name
                assert hit["resource"]["attributes"]["correlation.id"]
                assert hit["resource"]["attributes"]["service.name"] == t.service
        finally:
            es.close()

        for t in (acme, beta):
            _, _, trace_ids = sent[t.name]
            tr = wait_for(partial(jaeger_trace, trace_ids[0], spans=4), within=TIMEOUT,
                          what=f"trace {trace_ids[0]} whole in Jaeger")
            (process,) = tr["processes"].values()
            tags = {tag["key"]: tag["value"] for tag in process["tags"]}
            assert tags["tenant.id"] == t.name and process["serviceName"] == t.service

            sel = f'tenant="{t.name}"'
            total = wait_for(partial(promql, f"sum(orders_total{{{sel}}})"), within=TIMEOUT,
                             what=f"orders_total for {t.name} in Prometheus")
            assert float(total[0]["value"][1]) == 7.0
            assert not promql('orders_total{tenant="forged"}')
            assert total and promql(f'orders_total{{{sel},job="shop/{t.service}"}}')
            scope = (f'otel_scope_name="sink-tests",otel_scope_schema_url="{SCOPE_SCHEMA_URL}",'
                     'otel_scope_test_suite="sinks"')
            assert float(promql(f"sum(orders_total{{{sel},{scope}}})")[0]["value"][1]) == 7.0
            p50 = wait_for(partial(promql, "histogram_quantile(0.5, sum by (le) "
                                   f"(http_server_request_duration_seconds_bucket{{{sel}}}))"),
                           within=TIMEOUT, what="histogram_quantile over the buckets")
            assert 0.01 < float(p50[0]["value"][1]) <= 0.025
            count = wait_for(partial(promql, f"histogram_count(payload_size_bytes{{{sel}}})"),
                             within=TIMEOUT, what="the native histogram")
            assert float(count[0]["value"][1]) == 6
            assert promql(f"http_server_request_duration_seconds_count{{{sel}}}")[0]["value"][1] == \
                str(len(DURATION_VALUES))


def test_sdk_histogram_exemplar_reaches_prometheus_with_the_span_trace_id() -> None:
    stackenv.require("kafka", "prometheus")
    run = uuid.uuid4().hex[:8]
    tenant, key = f"e2e-exemplars-{run}", f"exkey{run}"
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, unique_prefix("exemplars"),
                    TG_AUTH__ENABLED="true", **{f"TG_AUTH__API_KEYS__{key}": tenant},
                    TG_PIPELINES__PROMETHEUS__URL=stackenv.PROMETHEUS_URL + "/api/v1/write")
    since = time.time() - 60
    sent = exemplar_metrics_data(client_resource(f"svc-{run}"))

    with running_gateway(env) as gw, running_pipeline(env, "prometheus") as pipeline:
        exporter = HttpMetricExporter(endpoint=gw.http_url + "/v1/metrics", headers={"x-api-key": key})
        try:
            assert exporter.export(sent.data).name == "SUCCESS"
        finally:
            exporter.shutdown()

        (bucket,) = wait_for(partial(prom_exemplars, f'checkout_duration_seconds_bucket{{tenant="{tenant}"}}',
                                     since), within=TIMEOUT, what="the histogram's exemplar in Prometheus")
        assert bucket["seriesLabels"]["le"] == "0.025"
        (ex,) = bucket["exemplars"]
        assert ex["labels"]["trace_id"] == sent.trace_id and ex["labels"]["span_id"] == sent.span_id
        assert ex["labels"]["user_id"] == "u-42" and float(ex["value"]) == EXEMPLAR_DURATION

        # The up-down counter's exemplar is dropped (a gauge's, by the spec) and counted.
        gauge_drops = ("pipeline_remote_write_dropped_exemplars_total", frozenset({("reason", "gauge")}))
        wait_for(lambda: pipeline.metrics().get(gauge_drops), within=TIMEOUT,
                 what="the gauge's exemplar counted as dropped")
