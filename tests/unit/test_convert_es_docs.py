"""OTLP -> Elasticsearch documents: the otel-mode fields, index names and idempotent ids."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from otlp.signals import Signal
from pipelines.convert.es_docs import (
    bulk_body,
    bulk_items,
    document_id,
    index_name,
    iso_nanos,
    log_body,
    log_documents,
    record_documents,
    span_documents,
    span_event_documents,
    tenant_index_part,
)
from pipelines.convert.parts import item_request
from tests.bad_otlp import MARKER, with_invalid_utf8
from tests.sdk_otlp import bus_record, logs_payload, spans_payload


def test_span_documents_carry_otel_mode_fields() -> None:
    payload, trace_ids = spans_payload("acme", traces=2, children=2)
    docs = list(span_documents(payload))
    assert len(docs) == 6
    assert {t for t, _ in docs} == {"acme"}
    by_name: dict[str, dict[str, Any]] = {}
    for _, d in docs:
        by_name.setdefault(d["name"], d)
    root = by_name["GET /cart"]
    assert root["kind"] == "Server"
    assert root["trace_id"] in trace_ids and len(root["trace_id"]) == 32
    assert len(root["span_id"]) == 16
    assert "parent_span_id" not in root
    assert root["duration"] > 0
    assert len(root["@timestamp"]) == len("2024-01-01T00:00:00.123456789Z")
    assert root["attributes"]["http.request.method"] == "GET"
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["status"] == {"code": "Unset"}
    assert root["events"][0]["name"] == "cache.miss"
    assert root["events"][0]["attributes"] == {"cache.key": "cart-1"}
    res = root["resource"]["attributes"]
    assert res["tenant.id"] == "acme" and res["correlation.id"] and res["service.name"] == "checkout"
    assert root["scope"] == {"name": "sink-tests", "version": "1.2.3"}
    assert root["data_stream"] == {"type": "traces", "dataset": "generic.otel", "namespace": "acme"}

    child0, child1 = by_name["SELECT cart 0"], by_name["SELECT cart 1"]
    assert child0["kind"] == "Client"
    assert child0["trace_id"] == root["trace_id"] and child0["parent_span_id"] == root["span_id"]
    assert child0["links"][0]["span_id"] and child0["links"][0]["attributes"] == {"link.kind": "parent"}
    assert child1["status"] == {"code": "Error", "message": "timeout"}


def test_log_documents_carry_otel_mode_fields() -> None:
    docs = [d for _, d in log_documents(logs_payload("acme", n=2))]
    assert len(docs) == 3
    first, structured = docs[0], docs[-1]
    assert first["body"] == {"text": "order 0 placed"}
    assert first["severity_text"] == "INFO" and first["severity_number"] == 9
    assert first["attributes"] == {"order.id": 0, "http.route": "/orders"}
    assert first["observed_timestamp"].endswith("Z")
    assert first["@timestamp"].endswith("Z")
    assert first["resource"]["attributes"]["tenant.id"] == "acme"
    assert first["data_stream"]["type"] == "logs"
    assert structured["body"] == {"structured": {"event": "refund", "amount": 12.5}}
    assert structured["severity_text"] == "WARN"


def test_log_trace_context_and_missing_time_fall_back_to_observed() -> None:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.observed_time_unix_nano = 1_700_000_000_123_456_789
    lr.trace_id = bytes(range(16))
    lr.span_id = bytes(range(8))
    lr.body.int_value = 7
    lr.event_name = "checkout.done"
    ((tenant, doc),) = log_documents(req.SerializeToString(), "fallback")
    assert tenant == "fallback"
    assert doc["@timestamp"] == doc["observed_timestamp"] == "2023-11-14T22:13:20.123456789Z"
    assert doc["trace_id"] == "000102030405060708090a0b0c0d0e0f"
    assert doc["span_id"] == "0001020304050607"
    assert doc["body"] == {"text": "7"}
    assert doc["event_name"] == "checkout.done"


def test_log_body_kinds() -> None:
    assert log_body(AnyValue()) == {}
    assert log_body(AnyValue(bool_value=True)) == {"text": "true"}
    assert log_body(AnyValue(double_value=1.5)) == {"text": "1.5"}
    assert log_body(AnyValue(bytes_value=b"\x00\x01")) == {"text": "AAE="}
    arr = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=2)]))
    assert log_body(arr) == {"structured": {"value": ["a", 2]}}
    nested = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="k", value=AnyValue(kvlist_value=KeyValueList(values=[
            KeyValue(key="x.y", value=AnyValue(int_value=1))])))]))
    assert log_body(nested) == {"structured": {"k": {"x.y": 1}}}


def test_iso_nanos_keeps_nanoseconds() -> None:
    assert iso_nanos(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_nanos(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


def test_index_names_are_elastic_otel_data_streams() -> None:
    assert index_name(Signal.TRACES, "acme") == "traces-generic.otel-acme"
    assert index_name(Signal.LOGS, "acme") == "logs-generic.otel-acme"
    assert tenant_index_part("a*b?c") == "a_2ab_3fc"
    assert len(tenant_index_part("x" * 500)) == 100  # a data stream namespace's limit


def test_bulk_items_have_offset_derived_ids_and_tenant_indices() -> None:
    payload, _ = spans_payload("Acme", traces=1, children=1)
    rec = bus_record(Signal.TRACES, payload, "Acme", offset=42, partition=3)
    items = [it for it in bulk_items(rec) if it.event < 0]
    assert [it.doc_id for it in items] == ["otlp_spans-3-42-0", "otlp_spans-3-42-1"]
    assert {it.index for it in items} == {"traces-generic.otel-_41cme"}
    assert document_id(rec, 7) == "otlp_spans-3-42-7"
    # Same record again, same ids: a redelivery overwrites.
    assert [it.doc_id for it in bulk_items(rec) if it.event < 0] == [it.doc_id for it in items]


def test_concatenated_requests_are_all_converted() -> None:
    a, _ = spans_payload("acme", traces=1, children=1)
    b, _ = spans_payload("other", traces=1, children=2)
    rec = bus_record(Signal.TRACES, a + b, "acme", offset=1)
    items = bulk_items(rec)
    # 5 spans, and the root span's event of each request as a log document.
    assert len(items) == 5 + 2
    assert [it.index for it in items].count("traces-generic.otel-other") == 3
    assert [it.index for it in items].count("logs-generic.otel-other") == 1
    assert len({it.doc_id for it in items}) == 7


def test_bulk_body_is_ndjson_create_actions() -> None:
    rec = bus_record(Signal.LOGS, logs_payload("acme", n=1), "acme", offset=5)
    items = bulk_items(rec)
    lines = bulk_body(items).split(b"\n")
    assert lines[-1] == b""
    assert orjson.loads(lines[0]) == {"create": {"_index": "logs-generic.otel-acme",
                                                 "_id": "otlp_logs-0-5-0"}}
    assert orjson.loads(lines[1])["body"] == {"text": "order 0 placed"}
    assert len(lines) == 2 * len(items) + 1


def test_bulk_item_json_is_the_whole_document() -> None:
    """The spliced JSON (own fields + shared parts serialized once per scope) is the document."""
    a, _ = spans_payload("acme", traces=1, children=2)
    b = logs_payload("beta", n=2)
    for rec, docs in ((bus_record(Signal.TRACES, a + a, "acme", offset=1), span_documents(a + a)),
                      (bus_record(Signal.LOGS, b, "beta", offset=2), log_documents(b))):
        items = [it for it in bulk_items(rec) if it.event < 0]
        expected = [doc for _, doc in docs]
        assert [orjson.loads(it.source) for it in items] == expected
    events = [it for it in bulk_items(bus_record(Signal.TRACES, a + a, "acme", offset=1)) if it.event >= 0]
    assert [orjson.loads(it.source) for it in events] == [doc for _, doc in span_event_documents(a + a)]


def test_tenant_index_part_is_one_to_one() -> None:
    pairs = [("Acme", "acme"), ("a/b", "a_b"), ("a-b", "a_b"), ("a b", "a_b"), ("a_2fb", "a/b"),
             ("", "_"), ("é", "e"), ("..", "__"), ("x" * 300, "x" * 301), ("A" * 300, "a" * 300)]
    for a, b in pairs:
        assert tenant_index_part(a) != tenant_index_part(b), (a, b)
    assert tenant_index_part("acme") == "acme"
    assert tenant_index_part("Acme") == "_41cme"
    assert tenant_index_part("a/b") == "a_2fb" and tenant_index_part("a_b") == "a_5fb"
    assert tenant_index_part("") == "_"
    assert index_name(Signal.LOGS, "Acme Corp/EU") == "logs-generic.otel-_41cme_20_43orp_2f_45_55"
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789._")
    for tenant in ["x" * 500, "Ä" * 300, "a-" * 200, "\\/*?\"<>| ,#:-+"]:
        part = tenant_index_part(tenant)
        assert set(part) <= allowed and len(part.encode()) <= 100, tenant
        assert "-" not in part  # a data stream namespace cannot hold "-"
    long_a, long_b = tenant_index_part("x" * 500), tenant_index_part("x" * 499)
    assert long_a != long_b and "__" in long_a


def _two_resources_one_bad_span() -> bytes:
    """A good request (2 spans) and one of 3 spans whose second span's name is not UTF-8."""
    good, _ = spans_payload("acme", traces=1, children=1)  # 2 spans
    other, _ = spans_payload("acme", traces=1, children=2)  # 3 spans
    req = ExportTraceServiceRequest.FromString(other)
    span = req.resource_spans[0].scope_spans[0].spans[1]
    bad = with_invalid_utf8(req, lambda m: setattr(span, "name", m))
    return good + bad


def test_a_bad_span_costs_only_itself_and_positions_stay_stable() -> None:
    payload = _two_resources_one_bad_span()
    rec = bus_record(Signal.TRACES, payload, "acme", offset=9)
    docs = record_documents(rec)
    # 2 spans of the good request + 2 good spans of the other; the bad one is position 3.
    spans = [it for it in docs.items if it.event < 0]
    assert [it.position for it in spans] == [0, 1, 2, 4]
    assert [it.doc_id for it in spans] == [f"otlp_spans-0-9-{p}" for p in (0, 1, 2, 4)]
    # Each root span's event (the SDK ends a root last) follows it, with the span's position.
    assert [(it.position, it.doc_id) for it in docs.items if it.event >= 0] == [
        (1, "otlp_spans-0-9-1-e0"), (4, "otlp_spans-0-9-4-e0")]
    (bad,) = docs.bad
    assert bad.items == 1 and "malformed OTLP" in bad.reason
    # The bad part is an Export request of that one span, with its resource and scope.
    assert MARKER.encode()[1:] in bad.value
    assert item_request(payload, 3) == bad.value
    # The same ids as when the record decodes whole: mend the bad byte and convert again.
    mended = payload.replace(b"\xff" + MARKER.encode()[1:], MARKER.encode())
    whole = record_documents(bus_record(Signal.TRACES, mended, "acme", offset=9))
    assert [it.doc_id for it in whole.items if it.position != 3] == [it.doc_id for it in docs.items]
    assert len(whole.items) == len(docs.items) + 1


def test_a_bad_resource_is_rejected_whole_and_garbage_is_one_part() -> None:
    good = logs_payload("acme", n=2)
    req = ExportLogsServiceRequest.FromString(logs_payload("acme", n=3))
    bad = with_invalid_utf8(req, lambda m: req.resource_logs[0].resource.attributes.add(
        key="k").value.__setattr__("string_value", m))
    docs = record_documents(bus_record(Signal.LOGS, bad + good, "acme", offset=1))
    # logs_payload(n) holds n + 1 records: the bad resource's 4 take positions 0-3.
    assert [it.position for it in docs.items] == [4, 5, 6]
    (part,) = docs.bad
    assert part.value == bad and part.items == 4
    garbage = b"\x0a\xff\xff\xff\xff\x0f"
    docs = record_documents(bus_record(Signal.LOGS, garbage, "acme", offset=1))
    assert docs.items == [] and docs.bad[0].value == garbage


def test_a_bad_scope_is_rejected_with_its_items_and_the_next_scope_converts() -> None:
    req = ExportTraceServiceRequest.FromString(spans_payload("acme", traces=1, children=1)[0])  # 2 spans
    second = req.resource_spans[0].scope_spans.add()
    second.CopyFrom(req.resource_spans[0].scope_spans[0])
    payload = with_invalid_utf8(req, lambda m: setattr(req.resource_spans[0].scope_spans[0].scope, "name", m))
    docs = record_documents(bus_record(Signal.TRACES, payload, "acme", offset=1))
    assert [it.position for it in docs.items if it.event < 0] == [2, 3]
    (bad,) = docs.bad
    assert bad.items == 2
    assert len(ExportTraceServiceRequest.FromString(
        bad.value.replace(b"\xff" + MARKER.encode()[1:], MARKER.encode())).resource_spans[0].scope_spans) == 1
