"""Elastic's OTel data-stream layout on a real node, fed by the OpenTelemetry SDK's exporters.

SDK exporters -> gateway (Kafka bus, API keys of two tenants) -> Kafka -> ``pipelines --sink
elasticsearch`` -> Elasticsearch. Each tenant's spans and logs must land in
``traces-generic.otel-<ns>`` / ``logs-generic.otel-<ns>``, ns named one to one from the tenant
(the two tenants differ only in case and ``-``/``_``, so a lossy mapping would merge them), with
``data_stream.*`` in each document saying the same; a span event must be findable as a log
document by its trace id; and routing attributes the clients send (``data_stream.dataset``,
``data_stream.namespace`` naming the other tenant, ``elasticsearch.index``) must move nothing.
"""

from __future__ import annotations

import uuid
from functools import partial

import pytest
from elasticsearch import Elasticsearch
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name, tenant_index_part
from tests import stackenv
from tests.e2e.kafka_pipeline import kafka_env, running_pipeline, unique_prefix
from tests.e2e.test_sinks_e2e import es_holds
from tests.gateway_process import GatewayProcess, running_gateway
from tests.sdk_otlp import client_resource, finished_logs, finished_spans
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0
TRACES, CHILDREN, LOGS = 2, 2, 3  # per tenant: 6 spans, 2 span events (one per root), 4 log records


def _send(gw: GatewayProcess, key: str, transport: str, routing: dict[str, str]) -> list[str]:
    """Spans and logs over the SDK exporters, the resource carrying ``routing``; the trace ids."""
    headers = {"x-api-key": key}
    res = client_resource(f"svc-{uuid.uuid4().hex[:6]}").merge(Resource(routing))
    spans, trace_ids = finished_spans(res, traces=TRACES, children=CHILDREN)
    logs = finished_logs(res, n=LOGS)
    grpc = transport == "grpc"
    span_exp = (GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True, headers=headers) if grpc
                else HttpSpanExporter(endpoint=gw.http_url + "/v1/traces", headers=headers))
    log_exp = (GrpcLogExporter(endpoint=gw.grpc_target, insecure=True, headers=headers) if grpc
               else HttpLogExporter(endpoint=gw.http_url + "/v1/logs", headers=headers))
    try:
        assert span_exp.export(spans).name == "SUCCESS"
        assert log_exp.export(logs).name == "SUCCESS"
    finally:
        span_exp.shutdown()
        log_exp.shutdown()
    assert len(spans) == TRACES * (1 + CHILDREN) and len(logs) == LOGS + 1
    return trace_ids


def test_sdk_data_lands_in_elastic_otel_streams_one_per_tenant() -> None:
    stackenv.require("kafka", "elasticsearch")
    run = uuid.uuid4().hex[:8]
    # One to one: these two would share a namespace under lower-casing or "-" -> "_".
    tenants = {"grpc": (f"Shop-EU-{run}", f"esgrpc{run}"), "http": (f"shop_eu_{run}", f"eshttp{run}")}
    names = [name for name, _ in tenants.values()]
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, unique_prefix("esotel"), TG_AUTH__ENABLED="true",
                    TG_PIPELINES__ELASTICSEARCH__HOSTS=stackenv.ES_URL)
    for name, key in tenants.values():
        env[f"TG_AUTH__API_KEYS__{key}"] = name

    with running_gateway(env) as gw, running_pipeline(env, "elasticsearch"):
        trace_ids: dict[str, list[str]] = {}
        for (transport, (name, key)), other in zip(tenants.items(), reversed(names), strict=True):
            # What would move the data elsewhere under the Collector's exporter.
            routing = {"data_stream.dataset": f"hijack{run}",
                       "data_stream.namespace": tenant_index_part(other),
                       "elasticsearch.index": index_name(Signal.LOGS, other)}
            trace_ids[name] = _send(gw, key, transport, routing)

        es = Elasticsearch(stackenv.ES_URL)
        try:
            for name in names:
                ns = tenant_index_part(name)
                traces, logs = f"traces-generic.otel-{ns}", f"logs-generic.otel-{ns}"
                assert (traces, logs) == (index_name(Signal.TRACES, name), index_name(Signal.LOGS, name))
                spans = TRACES * (1 + CHILDREN)
                wait_for(partial(es_holds, es, traces, spans), within=TIMEOUT,
                         what=f"{spans} spans in {traces}")
                # The log records and one log document per span event: exact counts, so nothing of
                # the other tenant (whose attributes name this stream) came in.
                wait_for(partial(es_holds, es, logs, LOGS + 1 + TRACES), within=TIMEOUT,
                         what=f"{LOGS + 1} log records and {TRACES} span events in {logs}")
                for index, kind in ((traces, "traces"), (logs, "logs")):
                    (stream,) = es.indices.resolve_index(name=index).body["data_streams"]
                    assert stream["name"] == index
                    hit = es.search(index=index, size=1).body["hits"]["hits"][0]["_source"]
                    assert hit["data_stream"] == {"type": kind, "dataset": "generic.otel", "namespace": ns}
                    assert hit["resource"]["attributes"]["tenant.id"] == name
                    assert hit["resource"]["attributes"]["data_stream.dataset"] == f"hijack{run}"

                trace_id = trace_ids[name][0]
                found = es.search(index=logs, query={"bool": {"filter": [
                    {"term": {"trace_id": trace_id}}, {"term": {"event_name": "cache.miss"}}]}}).body
                (event,) = found["hits"]["hits"]
                assert event["_source"]["attributes"] == {"cache.key": "cart-1", "event.name": "cache.miss"}
                root = es.search(index=traces, query={"bool": {"filter": [
                    {"term": {"trace_id": trace_id}}, {"term": {"name": "GET /cart"}}]}}).body["hits"]["hits"]
                assert event["_source"]["span_id"] == root[0]["_source"]["span_id"]

            assert tenant_index_part(names[0]) != tenant_index_part(names[1])
            # No stream under the client's dataset.
            assert not es.indices.resolve_index(name=f"*hijack{run}*").body["data_streams"]
        finally:
            es.close()
