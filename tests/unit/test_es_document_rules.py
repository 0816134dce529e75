"""Each Elasticsearch document rule, one exact value per test: span events as log documents,
geo points, array bodies, links, the values we write better than the Collector's exporter, and
the data stream a document goes to (never chosen by a client's attributes)."""

from __future__ import annotations

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp.signals import ATTR_TENANT, Signal
from pipelines.convert.es_docs import (
    bulk_items,
    document_attributes,
    log_body,
    log_documents,
    span_documents,
    span_event_documents,
)
from tests.otlp_payloads import kv
from tests.sdk_otlp import bus_record

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
TRACE_ID, SPAN_ID = bytes(range(16)), bytes(range(8))


def _kv(key: str, value: str | int | float | bytes) -> KeyValue:
    if isinstance(value, bytes):
        return KeyValue(key=key, value=AnyValue(bytes_value=value))
    return kv(key, value)


def _traces(span: Span, tenant: str = "acme", extra: list[KeyValue] | None = None) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "checkout"), _kv(ATTR_TENANT, tenant), *(extra or [])])
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    ss.spans.append(span)
    return req.SerializeToString()


def _logs(lr: LogRecord, tenant: str = "acme") -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([_kv(ATTR_TENANT, tenant)])
    rl.scope_logs.add().log_records.append(lr)
    return req.SerializeToString()


def _span(**fields: object) -> Span:
    span = Span(trace_id=TRACE_ID, span_id=SPAN_ID, name="GET /cart", start_time_unix_nano=T0,
                end_time_unix_nano=T0 + 5_000)
    for key, value in fields.items():
        setattr(span, key, value)
    return span


def test_a_span_event_is_a_log_document_in_the_tenants_logs_stream() -> None:
    span = _span()
    span.events.add(time_unix_nano=T0 + 1_000, name="exception", dropped_attributes_count=2,
                    attributes=[_kv("exception.type", "ValueError"), _kv("exception.message", "bad")])
    ((tenant, doc),) = span_event_documents(_traces(span))
    assert tenant == "acme"
    assert doc == {
        "@timestamp": "2023-11-14T22:13:20.000001000Z",
        "trace_id": "000102030405060708090a0b0c0d0e0f",
        "span_id": "0001020304050607",
        "dropped_attributes_count": 2,
        "event_name": "exception",
        "attributes": {"exception.type": "ValueError", "exception.message": "bad", "event.name": "exception"},
        "data_stream": {"type": "logs", "dataset": "generic.otel", "namespace": "acme"},
        "resource": {"attributes": {"service.name": "checkout", "tenant.id": "acme"}},
        "scope": {"name": "lib"},
    }
    # The span document keeps its events too.
    ((_, span_doc),) = span_documents(_traces(span))
    assert span_doc["events"] == [{"name": "exception", "timestamp": "2023-11-14T22:13:20.000001000Z",
                                   "attributes": {"exception.type": "ValueError", "exception.message": "bad"},
                                   "dropped_attributes_count": 2}]


def test_a_span_events_log_document_has_an_id_from_the_span_and_the_logs_index() -> None:
    span = _span()
    span.events.add(time_unix_nano=T0, name="a")
    span.events.add(time_unix_nano=T0, name="b")
    rec = bus_record(Signal.TRACES, _traces(span, tenant="Acme"), "Acme", offset=7, partition=2)
    assert [(it.index, it.doc_id, it.position, it.event) for it in bulk_items(rec)] == [
        ("traces-generic.otel-_41cme", "otlp_spans-2-7-0", 0, -1),
        ("logs-generic.otel-_41cme", "otlp_spans-2-7-0-e0", 0, 0),
        ("logs-generic.otel-_41cme", "otlp_spans-2-7-0-e1", 0, 1),
    ]


def test_a_span_event_without_a_time_takes_the_span_start_not_epoch_0() -> None:
    span = _span()
    span.events.add(name="")
    ((_, doc),) = span_event_documents(_traces(span))
    assert doc["@timestamp"] == "2023-11-14T22:13:20.000000000Z"
    assert "event_name" not in doc and "attributes" not in doc


def test_geo_lat_lon_pairs_become_one_lon_lat_point() -> None:
    attrs = document_attributes([
        _kv("client.geo.location.lat", 52.5), _kv("client.geo.location.lon", 13.4),
        _kv("geo.location.lon", -0.1), _kv("geo.location.lat", 51.5),
        _kv("server.geo.location.lat", 1.5),  # alone: stays
        _kv("host.geo.location.lat", 7), _kv("host.geo.location.lon", 8),  # not doubles: stay
        _kv("xgeo.location.lat", 1.0), _kv("xgeo.location.lon", 2.0),  # not a geo prefix
        _kv("city", "Berlin"),
    ])
    assert attrs == {
        "server.geo.location.lat": 1.5,
        "host.geo.location.lat": 7, "host.geo.location.lon": 8,
        "xgeo.location.lat": 1.0, "xgeo.location.lon": 2.0,
        "city": "Berlin",
        "client.geo.location": [13.4, 52.5],
        "geo.location": [-0.1, 51.5],
    }


def test_geo_merging_applies_to_resource_attributes_and_not_inside_maps() -> None:
    nested = KeyValue(key="m", value=AnyValue(kvlist_value=KeyValueList(values=[
        _kv("geo.location.lat", 1.0), _kv("geo.location.lon", 2.0)])))
    span = _span()
    span.attributes.append(nested)
    geo = [_kv("geo.location.lat", 3.0), _kv("geo.location.lon", 4.0)]
    ((_, doc),) = span_documents(_traces(span, extra=geo))
    assert doc["attributes"] == {"m": {"geo.location.lat": 1.0, "geo.location.lon": 2.0}}
    assert doc["resource"]["attributes"]["geo.location"] == [4.0, 3.0]


def test_a_body_that_is_an_array_of_maps_is_stored_as_the_array() -> None:
    def kvlist(k: str, v: int) -> AnyValue:
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v)]))

    maps = AnyValue(array_value=ArrayValue(values=[kvlist("a", 1), kvlist("b", 2)]))
    assert log_body(maps) == {"structured": [{"a": 1}, {"b": 2}]}
    mixed = AnyValue(array_value=ArrayValue(values=[kvlist("a", 1), AnyValue(int_value=2)]))
    assert log_body(mixed) == {"structured": {"value": [{"a": 1}, 2]}}
    assert log_body(AnyValue(array_value=ArrayValue())) == {"structured": []}


def test_links_keep_dropped_attributes_count() -> None:
    span = _span()
    span.links.add(trace_id=TRACE_ID, span_id=SPAN_ID, dropped_attributes_count=3, attributes=[_kv("k", "v")])
    span.links.add(trace_id=TRACE_ID, span_id=SPAN_ID, trace_state="a=b")
    ((_, doc),) = span_documents(_traces(span))
    assert doc["links"] == [
        {"trace_id": "000102030405060708090a0b0c0d0e0f", "span_id": "0001020304050607",
         "attributes": {"k": "v"}, "dropped_attributes_count": 3},
        {"trace_id": "000102030405060708090a0b0c0d0e0f", "span_id": "0001020304050607",
         "attributes": {}, "trace_state": "a=b"},
    ]


def test_bytes_are_base64_as_the_otel_spec_says() -> None:
    assert document_attributes([_kv("blob", b"\x00\xff")]) == {"blob": "AP8="}


def test_a_span_ending_before_it_starts_has_duration_0() -> None:
    ((_, doc),) = span_documents(_traces(_span(end_time_unix_nano=T0 - 1)))
    assert doc["duration"] == 0


def test_a_log_without_observed_time_has_no_epoch_0_observed_timestamp() -> None:
    ((_, doc),) = log_documents(_logs(LogRecord(time_unix_nano=T0)))
    assert doc["@timestamp"] == "2023-11-14T22:13:20.000000000Z"
    assert "observed_timestamp" not in doc


def test_a_log_takes_event_name_from_its_event_name_attribute() -> None:
    ((_, doc),) = log_documents(_logs(LogRecord(time_unix_nano=T0, attributes=[_kv("event.name", "login")])))
    assert doc["event_name"] == "login"
    ((_, doc),) = log_documents(_logs(LogRecord(time_unix_nano=T0, event_name="own",
                                                attributes=[_kv("event.name", "login")])))
    assert doc["event_name"] == "own"


ROUTING_ATTRIBUTES = [_kv("data_stream.dataset", "other"), _kv("data_stream.namespace", "beta"),
                      _kv("data_stream.type", "metrics"),
                      _kv("elasticsearch.index", "logs-generic.otel-beta")]


def test_client_routing_attributes_never_choose_the_stream() -> None:
    span = _span()
    span.attributes.extend(ROUTING_ATTRIBUTES)
    span.events.add(time_unix_nano=T0, name="e", attributes=ROUTING_ATTRIBUTES)
    req = ExportTraceServiceRequest.FromString(_traces(span, extra=ROUTING_ATTRIBUTES))
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(ROUTING_ATTRIBUTES)
    items = bulk_items(bus_record(Signal.TRACES, req.SerializeToString(), "acme", offset=1))
    assert [it.index for it in items] == ["traces-generic.otel-acme", "logs-generic.otel-acme"]
    span_doc, event_doc = (orjson.loads(it.source) for it in items)
    assert span_doc["data_stream"] == {"type": "traces", "dataset": "generic.otel", "namespace": "acme"}
    assert event_doc["data_stream"] == {"type": "logs", "dataset": "generic.otel", "namespace": "acme"}
    # Kept as the client's attributes, nothing more.
    assert span_doc["attributes"]["data_stream.dataset"] == "other"
    assert span_doc["resource"]["attributes"]["elasticsearch.index"] == "logs-generic.otel-beta"


def test_every_documents_data_stream_is_its_index_name() -> None:
    span = _span()
    span.events.add(time_unix_nano=T0, name="e")
    for rec in (bus_record(Signal.TRACES, _traces(span, tenant="A-b/c"), "x", offset=1),
                bus_record(Signal.LOGS, _logs(LogRecord(time_unix_nano=T0), tenant="A-b/c"), "x", offset=2)):
        for it in bulk_items(rec):
            ds = orjson.loads(it.source)["data_stream"]
            assert it.index == f"{ds['type']}-{ds['dataset']}-{ds['namespace']}"
            assert ds["namespace"] == "_41_2db_2fc"
