"""The Elasticsearch sink's bulk answers on a real node: the filtered response (``filter_path``:
errors, and per item only status and error type/reason) stays aligned with the request's items,
and a span whose documents are refused is dead-lettered once."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp.signals import Signal
from pipelines.convert.es_docs import bulk_body, bulk_items, index_name
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.elasticsearch import BULK_FILTER_PATH, ElasticsearchSink
from tests.integration import test_sink_elasticsearch as base
from tests.sdk_otlp import bus_record, logs_payload, spans_payload

pytestmark = pytest.mark.integration

# The sink there: bulks of at most 7 documents, so each write below is one bulk request.
sink = base.sink

# An attribute key over Lucene's 32766-byte term limit: a flattened field indexes "<key>\0<value>",
# so this is a document the node refuses (400) whatever the mapping.
REFUSED_KEY = "k" * 40_000


async def _ids(es: AsyncElasticsearch, index: str) -> list[str]:
    await es.indices.refresh(index=index)
    hits = (await es.search(index=index, size=100)).body["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


async def test_a_refused_document_mid_bulk_is_matched_to_its_own_record(sink: ElasticsearchSink) -> None:
    """One bulk of 7 (the fixture's bulk_max_docs): 3 already written (409), the refused one
    (400), 3 new (201). Only the refused record is rejected, so the filtered answers line up
    with the items one to one."""
    tenant = f"it-bulk-{uuid.uuid4().hex[:8]}"
    first = bus_record(Signal.LOGS, logs_payload(tenant, n=2), tenant, offset=1)  # 3 log records
    await sink.write([first])
    refused_value = base._log_with_attribute(tenant, REFUSED_KEY, lambda v: setattr(v, "string_value", "v"))
    refused = bus_record(Signal.LOGS, refused_value, tenant, offset=2)
    last = bus_record(Signal.LOGS, logs_payload(tenant, n=2), tenant, offset=3)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([first, refused, last])
    (rejection,) = err.value.rejected
    assert rejection.record.offset == 2 and rejection.value == refused_value
    assert "elasticsearch 400" in rejection.reason
    assert await _ids(sink.client, index_name(Signal.LOGS, tenant)) == sorted(
        [f"otlp_logs-0-1-{p}" for p in range(3)] + [f"otlp_logs-0-3-{p}" for p in range(3)])


async def test_a_span_refused_with_its_event_is_dead_lettered_once(sink: ElasticsearchSink) -> None:
    """The event's key refuses both the span document (which keeps its events) and the event's
    log document: one rejection, of that span; the other span and its event are written."""
    tenant = f"it-event-{uuid.uuid4().hex[:8]}"
    req = ExportTraceServiceRequest.FromString(spans_payload(tenant, traces=2, children=0)[0])  # 2 roots
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].events[0].attributes.add(key=REFUSED_KEY).value.string_value = "v"
    record = bus_record(Signal.TRACES, req.SerializeToString(), tenant, offset=5)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([record])
    (rejection,) = err.value.rejected
    # The span document comes first, so its refusal is the reason given.
    assert rejection.part is not None and "otlp_spans-0-5-0'" in rejection.reason
    rejected = ExportTraceServiceRequest.FromString(rejection.value)
    (rejected_span,) = rejected.resource_spans[0].scope_spans[0].spans
    assert rejected_span.span_id == spans[0].span_id
    assert await _ids(sink.client, index_name(Signal.TRACES, tenant)) == ["otlp_spans-0-5-1"]
    assert await _ids(sink.client, index_name(Signal.LOGS, tenant)) == ["otlp_spans-0-5-1-e0"]


async def test_a_filtered_bulk_answer_is_a_status_per_item_or_no_errors(sink: ElasticsearchSink) -> None:
    """Without errors the answer is read as ``{"errors": False}`` alone (the rest is not parsed);
    with one, every item has its status, in request order."""
    tenant = f"it-answer-{uuid.uuid4().hex[:8]}"
    good = bulk_items(bus_record(Signal.LOGS, logs_payload(tenant, n=2), tenant, offset=1))  # 3
    refused_value = base._log_with_attribute(tenant, REFUSED_KEY, lambda v: setattr(v, "string_value", "v"))
    refused = bulk_items(bus_record(Signal.LOGS, refused_value, tenant, offset=2))
    first = await sink.client.bulk(operations=bulk_body(good), filter_path=BULK_FILTER_PATH)  # type: ignore[arg-type]
    assert first.body == {"errors": False}
    again = await sink.client.bulk(operations=bulk_body([good[0], *refused, *good[1:]]),  # type: ignore[arg-type]
                                   filter_path=BULK_FILTER_PATH)
    assert again.body["errors"] is True
    answers = [next(iter(entry.values())) for entry in again.body["items"]]
    assert [a["status"] for a in answers] == [409, 400, 409, 409]
    assert [a["error"]["type"] for a in answers[:2]] == ["version_conflict_engine_exception",
                                                         "document_parsing_exception"]
