"""Elasticsearch sink against a real node: every span and log findable per tenant, no duplicates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name
from pipelines.sinks.base import PermanentSinkError, TransientSinkError
from pipelines.sinks.elasticsearch import ElasticsearchSink, template_name
from settings.config import ElasticsearchSinkConfig
from tests import stackenv
from tests.bad_otlp import MARKER, with_invalid_utf8
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
    assert sink.data_streams
    templates = []
    for signal in (Signal.TRACES, Signal.LOGS):
        templates += (await es.indices.get_index_template(name=template_name(signal))).body["index_templates"]
    assert sorted(p for t in templates for p in t["index_template"]["index_patterns"]) == \
        ["logs-generic.otel-*", "traces-generic.otel-*"]
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


def _log_with_attribute(tenant: str, key: str, set_value: Callable[[AnyValue], None]) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="tenant.id").value.string_value = tenant
    lr = rl.scope_logs.add().log_records.add()
    lr.time_unix_nano = 1_700_000_000_000_000_000
    set_value(lr.attributes.add(key=key).value)
    return req.SerializeToString()


async def test_a_document_the_store_refuses_rejects_only_that_document(sink: ElasticsearchSink,
                                                                       es: AsyncElasticsearch) -> None:
    """A 400 for one document dead-letters that log record alone, the record's others are written."""
    acme, _ = _tenants()
    good = logs_payload(acme, n=2)  # 3 log records
    # An attribute key over Lucene's 32766-byte term limit: the one thing a flattened field
    # cannot set aside (it indexes "<key>\0<value>").
    refused = _log_with_attribute(acme, "k" * 40_000, lambda v: setattr(v, "string_value", "v"))
    garbage = bus_record(Signal.LOGS, b"\x0a\xff\xff\xff\xff\x0f", acme, offset=3)
    mixed = bus_record(Signal.LOGS, good + refused, acme, offset=2)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([bus_record(Signal.LOGS, good, acme, offset=1), mixed, garbage])
    reasons = {(r.record.offset, r.value): r.reason for r in err.value.rejected}
    assert set(reasons) == {(2, refused), (3, garbage.value)}
    assert "elasticsearch 400" in reasons[2, refused] and "malformed OTLP" in reasons[3, garbage.value]
    assert await _count(es, index_name(Signal.LOGS, acme)) == 3 + 3


async def test_a_bad_span_is_dead_lettered_alone_and_the_good_one_lands_once(
        sink: ElasticsearchSink, es: AsyncElasticsearch) -> None:
    """One record: a good request and one whose span name is not UTF-8 (the gateway batched them)."""
    acme, _ = _tenants()
    good, (good_trace,) = spans_payload(acme, traces=1, children=0)
    req = ExportTraceServiceRequest.FromString(spans_payload(acme, traces=1, children=1)[0])
    bad_part = with_invalid_utf8(req, lambda m: setattr(req.resource_spans[0].scope_spans[0].spans[0],
                                                        "name", m))
    record = bus_record(Signal.TRACES, good + bad_part, acme, offset=7)
    for _attempt in range(2):  # the second is a redelivery: nothing is added, the same part rejected
        with pytest.raises(PermanentSinkError) as err:
            await sink.write([record])
        (rej,) = err.value.rejected
        assert rej.record is record and rej.part is not None and "malformed OTLP" in rej.reason
        # Only the bad span (with its resource and scope) goes to the dead-letter topic.
        assert len(rej.value) < len(bad_part) and MARKER.encode()[1:] in rej.value
    index = index_name(Signal.TRACES, acme)
    assert await _count(es, index) == 2  # the good request's span and the bad one's good child
    hits = (await es.search(index=index, query={"term": {"trace_id": good_trace}})).body["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["otlp_spans-0-7-0"]


async def test_no_attribute_value_gets_a_document_refused(sink: ElasticsearchSink,
                                                          es: AsyncElasticsearch) -> None:
    acme, _ = _tenants()
    stack = ("java.lang.IllegalStateException: boom " + "at com.example.Foo.bar(Foo.java:1) " * 1600)[:53_817]
    assert len(stack.encode()) == 53_817
    req = ExportTraceServiceRequest.FromString(spans_payload(acme, traces=1, children=0)[0])
    span = req.resource_spans[0].scope_spans[0].spans[0]
    event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano)
    event.attributes.add(key="exception.stacktrace").value.string_value = stack
    span.attributes.add(key="big.value").value.string_value = stack
    req.resource_spans[0].resource.attributes.add(key="big.resource").value.string_value = stack

    def nested(v: AnyValue, depth: int) -> None:  # 16 levels of AnyValue nesting, kvlists and arrays
        for level in range(depth):
            v = (v.kvlist_value.values.add(key=f"l{level}").value if level % 2 == 0
                 else v.array_value.values.add())
        v.string_value = "leaf"

    nested(span.attributes.add(key="deep").value, 16)
    kv_only = span.attributes.add(key="deep.kv").value
    for level in range(16):
        kv_only = kv_only.kvlist_value.values.add(key=f"k{level}").value
    kv_only.int_value = 16
    for i in range(3000):  # more keys than index.mapping.total_fields.limit
        span.attributes.add(key=f"many.k{i}").value.int_value = i
    # One key, many types across documents: string, int, double, bool, kvlist, array, bytes.
    typed = [lambda v: setattr(v, "string_value", "text"), lambda v: setattr(v, "int_value", 7),
             lambda v: setattr(v, "double_value", 1.5), lambda v: setattr(v, "bool_value", True),
             lambda v: v.kvlist_value.values.add(key="inner").value.__setattr__("string_value", "x"),
             lambda v: v.array_value.values.add().__setattr__("int_value", 1),
             lambda v: setattr(v, "bytes_value", b"\x00\x01")]
    records = [bus_record(Signal.TRACES, req.SerializeToString(), acme, offset=1)]
    records += [bus_record(Signal.LOGS, _log_with_attribute(acme, "mixed", set_value), acme, offset=10 + i)
                for i, set_value in enumerate(typed)]
    # Log bodies alike: a map under a key that was a string in another document's body.
    records += [bus_record(Signal.LOGS, _log_with_attribute(acme, "mixed.body", typed[i]), acme,
                           offset=20 + i) for i in (0, 4)]
    await sink.write(records)  # no PermanentSinkError: every document answered 201

    traces, logs = index_name(Signal.TRACES, acme), index_name(Signal.LOGS, acme)
    # The logs: the typed ones, the two bodies, and the span's two events (the SDK's and ours).
    assert await _count(es, traces) == 1 and await _count(es, logs) == len(typed) + 2 + 2
    found = await es.search(index=logs, query={"term": {"event_name": "exception"}})
    (event_doc,) = found.body["hits"]["hits"]
    assert event_doc["_source"]["attributes"]["exception.stacktrace"] == stack
    (hit,) = (await es.search(index=traces, query={"match_all": {}})).body["hits"]["hits"]
    src = hit["_source"]
    assert src["events"][-1]["attributes"]["exception.stacktrace"] == stack  # kept in _source
    assert src["attributes"]["deep.kv"] == _nested_kv(16)
    assert src["attributes"]["many.k2999"] == 2999
    # Short values stay queryable, in attributes of every kind.
    assert (await es.count(index=traces, query={"term": {"attributes.many.k7": 7}})).body["count"] == 1
    assert (await es.count(index=logs, query={"term": {"attributes.mixed": "text"}})).body["count"] == 1
    assert (await es.count(index=logs, query={"term": {"attributes.mixed.inner": "x"}})).body["count"] == 1


def _nested_kv(depth: int) -> object:
    value: object = 16
    for level in reversed(range(depth)):
        value = {f"k{level}": value}
    return value


async def test_tenants_that_differ_only_in_case_or_punctuation_get_stores_of_their_own(
        sink: ElasticsearchSink, es: AsyncElasticsearch) -> None:
    run = uuid.uuid4().hex[:8]
    pairs = [(f"Acme{run}", f"acme{run}"), (f"a/b{run}", f"a_b{run}"), (f"x-{run}", f"x_{run}"),
             (f".{run}", f"_{run}"), (f"-{run}", f"+{run}"), (f"Ä {run}", f"ä,{run}"),
             ("L" * 300 + run, "l" * 300 + run)]
    records = []
    for offset, (a, b) in enumerate(pairs):
        records += [bus_record(Signal.LOGS, logs_payload(a, n=1), a, offset=2 * offset),
                    bus_record(Signal.LOGS, logs_payload(b, n=2), b, offset=2 * offset + 1)]
    await sink.write(records)
    for a, b in pairs:
        ia, ib = index_name(Signal.LOGS, a), index_name(Signal.LOGS, b)
        assert ia != ib
        assert await _count(es, ia) == 2 and await _count(es, ib) == 3
        tenants = await es.search(index=ia, aggs={"t": {"terms": {"field": "resource.attributes.tenant.id"}}},
                                  size=0)
        assert [b["key"] for b in tenants.body["aggregations"]["t"]["buckets"]] == [a]


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


async def test_a_retried_record_rejects_its_bad_part_once_and_keeps_its_ids(
        sink: ElasticsearchSink, es: AsyncElasticsearch) -> None:
    """While the stream is write-blocked the record is not settled (nor its bad part); the retry
    writes the good documents under the same ids and rejects the part once."""
    acme, _ = _tenants()
    index = index_name(Signal.LOGS, acme)
    await sink.write([bus_record(Signal.LOGS, logs_payload(acme, n=1), acme, offset=1)])  # creates it
    req = ExportLogsServiceRequest.FromString(logs_payload(acme, n=1))  # 2 log records
    bad = with_invalid_utf8(req, lambda m: setattr(req.resource_logs[0].scope_logs[0].log_records[0],
                                                   "severity_text", m))
    record = bus_record(Signal.LOGS, bad + logs_payload(acme, n=2), acme, offset=2)
    await es.indices.put_settings(index=index, settings={"index.blocks.write": True})
    try:
        with pytest.raises(TransientSinkError) as transient:
            await sink.write([record])
        assert transient.value.written == [] and transient.value.rejected == []
    finally:
        await es.indices.put_settings(index=index, settings={"index.blocks.write": False})
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([record])
    (rej,) = err.value.rejected
    assert rej.record.offset == 2 and rej.part is not None and rej.value != record.value
    await es.indices.refresh(index=index)
    ids = sorted(h["_id"] for h in (await es.search(index=index, size=20)).body["hits"]["hits"])
    # Position 0 is the bad log record; 1 its good sibling; 2-4 the second request's three.
    expected = ["otlp_logs-0-1-0", "otlp_logs-0-1-1"] + [f"otlp_logs-0-2-{p}" for p in (1, 2, 3, 4)]
    assert ids == sorted(expected)
