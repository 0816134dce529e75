"""Elasticsearch sink against a real node: every span and log findable per tenant, no duplicates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from gateway.config import ElasticsearchSinkConfig
from gateway.signals import Signal
from pipelines.convert.es_docs import index_name
from pipelines.sinks.base import PermanentSinkError, TransientSinkError
from pipelines.sinks.elasticsearch import ElasticsearchSink
from tests import stackenv
from tests.integration.sink_checks import assert_write_is_transient
from tests.sdk_otlp import bus_record, logs_payload, spans_payload

pytestmark = pytest.mark.integration


@pytest.fixture
async def es() -> AsyncIterator[AsyncElasticsearch]:
    stackenv.require("elasticsearch")
    client = AsyncElasticsearch(stackenv.ES_URL)
    yield client
    await client.close()


@pytest.fixture
async def sink() -> AsyncIterator[ElasticsearchSink]:
    stackenv.require("elasticsearch")
    # Small bulks so one write takes several concurrent bulk requests.
    s = ElasticsearchSink(ElasticsearchSinkConfig(hosts=stackenv.ES_URL, bulk_max_docs=7, concurrency=2))
    await s.start()
    yield s
    await s.stop()


async def _count(es: AsyncElasticsearch, index: str) -> int:
    await es.indices.refresh(index=index)
    return int((await es.count(index=index)).body["count"])


def _tenants() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"It-Acme-{run}", f"it-beta-{run}"


async def test_tenant_names_are_data_streams_under_our_templates(sink: ElasticsearchSink,
                                                                 es: AsyncElasticsearch) -> None:
    """What the sink's docstring claims about the stack's node, checked on the node."""
    assert sink.data_streams and sink.attributes_type == "passthrough"
    templates = (await es.indices.get_index_template(name="*-otel-telemetry-gateway")).body["index_templates"]
    assert sorted(p for t in templates for p in t["index_template"]["index_patterns"]) == \
        ["logs-otel-*", "traces-otel-*"]
    assert all("data_stream" in t["index_template"] for t in templates)

    tenant, _ = _tenants()
    payload, _ = spans_payload(tenant, traces=1, children=0)
    await sink.write([bus_record(Signal.TRACES, payload, tenant, offset=1)])
    resolved = (await es.indices.resolve_index(name=index_name(Signal.TRACES, tenant))).body
    (stream,) = resolved["data_streams"]
    assert stream["name"] == index_name(Signal.TRACES, tenant)
    assert stream["backing_indices"][0].startswith(".ds-")


async def test_spans_are_searchable_per_tenant_with_otel_fields(sink: ElasticsearchSink,
                                                                es: AsyncElasticsearch) -> None:
    acme, beta = _tenants()
    a_payload, a_traces = spans_payload(acme, traces=3, children=3)  # 12 spans
    b_payload, _ = spans_payload(beta, traces=1, children=1)  # 2 spans
    records = [bus_record(Signal.TRACES, a_payload, acme, offset=10),
               bus_record(Signal.TRACES, b_payload, beta, offset=11),
               bus_record(Signal.TRACES, a_payload + b_payload, acme, offset=12)]  # two resources in one
    await sink.write(records)
    a_index, b_index = index_name(Signal.TRACES, acme), index_name(Signal.TRACES, beta)
    assert a_index == a_index.lower()
    assert await _count(es, a_index) == 24
    assert await _count(es, b_index) == 4

    # Same records again (a redelivery): each _id is already there (409), nothing is added.
    await sink.write(records)
    assert await _count(es, a_index) == 24
    assert await _count(es, b_index) == 4

    hits = (await es.search(index=a_index, query={"term": {"trace_id": a_traces[0]}}, size=100,
                            sort=[{"@timestamp": "asc"}])).body["hits"]["hits"]
    assert len(hits) == 8  # the trace came in two records
    assert {h["_id"].rsplit("-", 2)[0] for h in hits} == {"otlp_spans-0"}
    root = next(h["_source"] for h in hits if h["_source"]["name"] == "GET /cart")
    assert root["kind"] == "Server" and root["duration"] > 0
    assert root["resource"]["attributes"]["tenant.id"] == acme
    assert root["resource"]["attributes"]["correlation.id"]
    assert root["scope"] == {"name": "sink-tests", "version": "1.2.3"}
    assert root["events"][0]["name"] == "cache.miss"

    # Typed, dotted attribute fields are queryable as such.
    by_status = await es.count(index=a_index, query={"term": {"attributes.http.response.status_code": 200}})
    assert by_status.body["count"] == 6
    errors = await es.count(index=a_index, query={"term": {"status.code": "Error"}})
    assert errors.body["count"] == 6
    tenant_q = await es.count(index=a_index, query={"term": {"resource.attributes.tenant.id": acme}})
    assert tenant_q.body["count"] == 24
    children = await es.count(index=a_index, query={"exists": {"field": "parent_span_id"}})
    assert children.body["count"] == 18
    (backing,) = (await es.indices.get_mapping(index=a_index)).body.values()
    mapping = backing["mappings"]["properties"]
    assert mapping["@timestamp"]["type"] == "date_nanos"
    assert mapping["trace_id"]["type"] == "keyword"


async def test_logs_are_searchable_per_tenant_with_otel_fields(sink: ElasticsearchSink,
                                                               es: AsyncElasticsearch) -> None:
    acme, beta = _tenants()
    records = [bus_record(Signal.LOGS, logs_payload(acme, n=5), acme, offset=1),
               bus_record(Signal.LOGS, logs_payload(beta, n=2), beta, offset=2),
               bus_record(Signal.LOGS, logs_payload(acme, n=1), acme, offset=3)]
    await sink.write(records)
    await sink.write(records[:1])  # redelivery of one record
    a_index, b_index = index_name(Signal.LOGS, acme), index_name(Signal.LOGS, beta)
    assert await _count(es, a_index) == 6 + 2
    assert await _count(es, b_index) == 3

    text = await es.search(index=a_index, query={"match": {"body.text": "order 3"}}, size=20)
    sources = [h["_source"] for h in text.body["hits"]["hits"]]
    assert any(s["body"]["text"] == "order 3 placed" for s in sources)
    assert all(s["resource"]["attributes"]["tenant.id"] == acme for s in sources)
    structured = await es.search(index=a_index, query={"term": {"body.structured.event": "refund"}})
    hits = structured.body["hits"]["hits"]
    assert len(hits) == 2
    src = hits[0]["_source"]
    assert src["severity_text"] == "WARN" and src["severity_number"] == 13
    assert src["observed_timestamp"] and src["@timestamp"]
    warn = await es.count(index=a_index, query={"range": {"severity_number": {"gte": 13}}})
    assert warn.body["count"] == 2
    # order.id 1: the second record of the first payload, and the refund of the one-record payload.
    by_attr = await es.count(index=a_index, query={"term": {"attributes.order.id": 1}})
    assert by_attr.body["count"] == 2


async def test_unreachable_node_is_transient() -> None:
    payload, _ = spans_payload("acme", traces=1, children=0)
    # start() does not raise: installing the templates is retried on write.
    await assert_write_is_transient(ElasticsearchSink(ElasticsearchSinkConfig(hosts="http://127.0.0.1:1")),
                                    [bus_record(Signal.TRACES, payload, "acme", offset=1)])


def _deep_body_log(tenant: str, depth: int) -> bytes:
    """A log whose map body nests ``depth`` levels: beyond ``flattened``'s depth limit of 20."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="tenant.id").value.string_value = tenant
    lr = rl.scope_logs.add().log_records.add()
    lr.time_unix_nano = 1_700_000_000_000_000_000
    node = lr.body
    for i in range(depth):
        node = node.kvlist_value.values.add(key=f"k{i}").value
    node.string_value = "leaf"
    return req.SerializeToString()


async def test_a_document_the_mapping_refuses_rejects_only_its_record(sink: ElasticsearchSink,
                                                                      es: AsyncElasticsearch) -> None:
    acme, _ = _tenants()
    good = bus_record(Signal.LOGS, logs_payload(acme, n=2), acme, offset=1)
    bad = bus_record(Signal.LOGS, _deep_body_log(acme, 30), acme, offset=2)
    garbage = bus_record(Signal.LOGS, b"\x0a\xff\xff\xff\xff\x0f", acme, offset=3)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([good, bad, garbage])
    reasons = {r.record.offset: r.reason for r in err.value.rejected}
    assert set(reasons) == {2, 3}
    assert "elasticsearch 400" in reasons[2] and "malformed OTLP" in reasons[3]
    assert await _count(es, index_name(Signal.LOGS, acme)) == 3


async def test_a_write_blocked_stream_is_transient_until_unblocked(sink: ElasticsearchSink,
                                                                   es: AsyncElasticsearch) -> None:
    acme, _ = _tenants()
    index = index_name(Signal.LOGS, acme)
    first = bus_record(Signal.LOGS, logs_payload(acme, n=1), acme, offset=1)
    await sink.write([first])
    await es.indices.put_settings(index=index, settings={"index.blocks.write": True})
    second = bus_record(Signal.LOGS, logs_payload(acme, n=3), acme, offset=2)
    try:
        with pytest.raises(TransientSinkError):
            await sink.write([first, second])
    finally:
        await es.indices.put_settings(index=index, settings={"index.blocks.write": False})
    await sink.write([first, second])  # the pipeline's retry: same records
    assert await _count(es, index) == 2 + 4
