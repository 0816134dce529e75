"""OTLP/JSON: hand-written requests in the spec's shape must equal their protobuf twins."""

from __future__ import annotations

import base64
import contextlib
import random

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp.json_mapping import json_to_proto, proto_to_json, response_json
from otlp.signals import Signal
from otlp.wire import WireError, encode_varint
from tests.otlp_payloads import REQUEST_TYPES, kv, payload, resource, scope

TRACE_HEX = "5B8EFFF798038103D269B633813FC60C"
SPAN_HEX = "EEE19B7EC3C1B174"
PARENT_HEX = "eee19b7ec3c1b173"  # lower case: ids are case-insensitive

TRACE_JSON = b"""{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
    "scopeSpans": [{
      "scope": {"name": "cart.lib", "version": "2.0.1"},
      "spans": [{
        "traceId": "%s",
        "spanId": "%s",
        "parentSpanId": "%s",
        "name": "POST /cart",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "kind": 2,
        "attributes": [
          {"key": "http.response.status_code", "value": {"intValue": "201"}},
          {"key": "retry", "value": {"boolValue": false}}
        ],
        "events": [{"timeUnixNano": "1544712660500000000", "name": "cache.miss"}],
        "links": [{"traceId": "%s", "spanId": "%s"}],
        "status": {"code": 2, "message": "boom"},
        "someFutureField": {"ignored": true}
      }]
    }],
    "schemaUrl": "https://opentelemetry.io/schemas/1.24.0"
  }]
}""" % (TRACE_HEX.encode(), SPAN_HEX.encode(), PARENT_HEX.encode(), TRACE_HEX.lower().encode(),
        PARENT_HEX.encode())


def trace_twin() -> ExportTraceServiceRequest:
    span = trace_pb2.Span(
        trace_id=bytes.fromhex(TRACE_HEX), span_id=bytes.fromhex(SPAN_HEX),
        parent_span_id=bytes.fromhex(PARENT_HEX), name="POST /cart",
        start_time_unix_nano=1544712660000000000, end_time_unix_nano=1544712661000000000,
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        attributes=[kv("http.response.status_code", 201), kv("retry", False)],
        events=[trace_pb2.Span.Event(time_unix_nano=1544712660500000000, name="cache.miss")],
        links=[trace_pb2.Span.Link(trace_id=bytes.fromhex(TRACE_HEX), span_id=bytes.fromhex(PARENT_HEX))],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    )
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.24.0")
    rs.resource.attributes.append(kv("service.name", "cart"))
    rs.scope_spans.add(scope={"name": "cart.lib", "version": "2.0.1"}, spans=[span])
    return req


LOGS_JSON = b"""{
  "resourceLogs": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
    "scopeLogs": [{
      "scope": {"name": "cart.logger"},
      "logRecords": [{
        "timeUnixNano": "1544712660300000000",
        "observedTimeUnixNano": 1544712660300000000,
        "severityNumber": 9,
        "severityText": "Information",
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "flags": 1,
        "body": {"stringValue": "cart emptied"},
        "attributes": [
          {"key": "s", "value": {"stringValue": "x"}},
          {"key": "d", "value": {"doubleValue": 637.704}},
          {"key": "i", "value": {"intValue": 10}},
          {"key": "b", "value": {"bytesValue": "AQID"}},
          {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "one"}, {"intValue": "2"}]}}},
          {"key": "m", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}}
        ]
      }]
    }]
  }]
}"""


def logs_twin() -> ExportLogsServiceRequest:
    rec = logs_pb2.LogRecord(
        time_unix_nano=1544712660300000000, observed_time_unix_nano=1544712660300000000,
        severity_number=logs_pb2.SEVERITY_NUMBER_INFO, severity_text="Information",
        trace_id=bytes.fromhex(TRACE_HEX), span_id=bytes.fromhex(SPAN_HEX), flags=1,
        body=AnyValue(string_value="cart emptied"),
        attributes=[
            kv("s", "x"), kv("d", 637.704), kv("i", 10),
            KeyValue(key="b", value=AnyValue(bytes_value=b"\x01\x02\x03")),
            KeyValue(key="a", value=AnyValue(array_value=ArrayValue(
                values=[AnyValue(string_value="one"), AnyValue(int_value=2)]))),
            KeyValue(key="m", value=AnyValue(kvlist_value=KeyValueList(values=[kv("k", "v")]))),
        ],
    )
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "cart"))
    rl.scope_logs.add(scope={"name": "cart.logger"}, log_records=[rec])
    return req


METRICS_JSON = b"""{
  "resourceMetrics": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
    "scopeMetrics": [{
      "scope": {"name": "cart.meter"},
      "metrics": [
        {"name": "cart.adds", "unit": "1", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
          "dataPoints": [{"asInt": "5", "startTimeUnixNano": "1544712660300000000",
                          "timeUnixNano": "1544712670300000000",
                          "exemplars": [{"asDouble": 1.5, "timeUnixNano": "1544712665000000000",
                                         "traceId": "5B8EFFF798038103D269B633813FC60C",
                                         "spanId": "EEE19B7EC3C1B174"}]}]}},
        {"name": "cart.size",
         "gauge": {"dataPoints": [{"asDouble": 10, "timeUnixNano": 1544712660300000000}]}},
        {"name": "cart.latency", "unit": "s", "histogram": {"aggregationTemporality": 1,
          "dataPoints": [{"count": "3", "sum": 3, "bucketCounts": ["1", 1, "1"], "explicitBounds": [1, 2],
                          "min": 1, "max": 1, "timeUnixNano": "1544712660300000000"}]}},
        {"name": "cart.exp", "exponentialHistogram": {"aggregationTemporality": 1,
          "dataPoints": [{"count": "2", "scale": -1, "zeroCount": "0",
                          "positive": {"offset": 2, "bucketCounts": ["1", "1"]}}]}},
        {"name": "cart.summary", "summary": {"dataPoints": [{"count": "4", "sum": 2.5,
          "quantileValues": [{"quantile": 0.99, "value": 1.2}]}]}}
      ]
    }]
  }]
}"""


def metrics_twin() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "cart"))
    sm = rm.scope_metrics.add(scope={"name": "cart.meter"})
    s = sm.metrics.add(name="cart.adds", unit="1")
    s.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    s.sum.is_monotonic = True
    s.sum.data_points.add(
        as_int=5, start_time_unix_nano=1544712660300000000, time_unix_nano=1544712670300000000,
        exemplars=[metrics_pb2.Exemplar(as_double=1.5, time_unix_nano=1544712665000000000,
                                        trace_id=bytes.fromhex(TRACE_HEX), span_id=bytes.fromhex(SPAN_HEX))])
    sm.metrics.add(name="cart.size").gauge.data_points.add(as_double=10, time_unix_nano=1544712660300000000)
    h = sm.metrics.add(name="cart.latency", unit="s")
    h.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    h.histogram.data_points.add(count=3, sum=3, bucket_counts=[1, 1, 1], explicit_bounds=[1, 2], min=1, max=1,
                                time_unix_nano=1544712660300000000)
    e = sm.metrics.add(name="cart.exp")
    e.exponential_histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    e.exponential_histogram.data_points.add(count=2, scale=-1,
                                            positive={"offset": 2, "bucket_counts": [1, 1]})
    sm.metrics.add(name="cart.summary").summary.data_points.add(
        count=4, sum=2.5, quantile_values=[{"quantile": 0.99, "value": 1.2}])
    return req


CASES = [(Signal.TRACES, TRACE_JSON, trace_twin), (Signal.LOGS, LOGS_JSON, logs_twin),
         (Signal.METRICS, METRICS_JSON, metrics_twin)]


@pytest.mark.parametrize(("signal", "body", "twin"), CASES)
def test_json_equals_protobuf_twin(signal: Signal, body: bytes, twin: object) -> None:
    got = REQUEST_TYPES[signal].FromString(json_to_proto(signal, body))
    assert got == twin()  # type: ignore[operator]


@pytest.mark.parametrize(("signal", "body", "twin"), CASES)
def test_proto_to_json_round_trips_with_hex_ids(signal: Signal, body: bytes, twin: object) -> None:
    data = twin().SerializeToString()  # type: ignore[operator]
    text = proto_to_json(signal, data)
    assert json_to_proto(signal, text) == data
    assert b"\n" not in text  # compact
    assert TRACE_HEX.lower().encode() in text  # ids as hex, never base64


@pytest.mark.parametrize("signal", list(Signal))
def test_round_trip_of_realistic_payloads(signal: Signal) -> None:
    data = payload(signal)
    assert REQUEST_TYPES[signal].FromString(json_to_proto(signal, proto_to_json(signal, data))) == \
        REQUEST_TYPES[signal].FromString(data)


def test_proto_field_names_are_accepted_too() -> None:
    body = orjson.dumps({"resource_spans": [{"scope_spans": [{"spans": [
        {"trace_id": TRACE_HEX, "span_id": SPAN_HEX, "name": "n", "kind": "SPAN_KIND_CLIENT"}]}]}]})
    got = ExportTraceServiceRequest.FromString(json_to_proto(Signal.TRACES, body))
    span = got.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX) and span.kind == trace_pb2.Span.SPAN_KIND_CLIENT


def test_empty_object_is_an_empty_request() -> None:
    assert json_to_proto(Signal.LOGS, b"{}") == b""


@pytest.mark.parametrize(("body", "needle"), [
    (b"{", "invalid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0].traceId"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}', "not a hex"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "5B8EFFF798038103D269B633813FC60C"}]}]}]}',
     "spans[0].spanId: '5B8EFFF798038103D269B633813FC60C' is not a hex-encoded id of 8 bytes"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5B8EFFF798038103D269B633813FC60CZZ"}]}]}]}',
     "of 16 bytes"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5B8EFFF798038103D269B633813FC6ZZ"}]}]}]}',
     "is not a hex-encoded id"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "invalid OTLP/JSON traces"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
     "invalid OTLP/JSON"),
    (b'{"resourceSpans": 3}', "invalid OTLP/JSON"),
])
def test_bad_json_raises_wire_error_with_a_clear_message(body: bytes, needle: str) -> None:
    with pytest.raises(WireError) as err:
        json_to_proto(Signal.TRACES, body)
    assert needle in str(err.value)


def test_proto_to_json_refuses_garbage() -> None:
    with pytest.raises(WireError):
        proto_to_json(Signal.TRACES, b"\x0a\x05ab")


@pytest.mark.parametrize(("signal", "field"), [(Signal.TRACES, "rejectedSpans"),
                                               (Signal.LOGS, "rejectedLogRecords"),
                                               (Signal.METRICS, "rejectedDataPoints")])
def test_response_json(signal: Signal, field: str) -> None:
    assert response_json(0, "", signal) == b"{}"
    doc = orjson.loads(response_json(3, "dropped 1 malformed", signal))
    assert doc == {"partialSuccess": {field: "3", "errorMessage": "dropped 1 malformed"}}
    only_message = orjson.loads(response_json(0, "warning", signal))
    assert only_message == {"partialSuccess": {"errorMessage": "warning"}}


def test_helpers_build_resources_and_scopes() -> None:
    assert resource().attributes[0].key == "service.name"
    assert scope().name


# --- the direct encoder against json_format on tricky values ---------------------------------

TRICKY_METRICS = {"resourceMetrics": [{
    "resource": {},
    "scopeMetrics": [{"metrics": [
        {"name": "h", "histogram": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA", "dataPoints": [
            {"sum": 0, "min": -0.0, "max": "Infinity", "count": 0,
             "explicitBounds": ["NaN", "-Infinity", 1e300],
             "bucketCounts": [], "flags": 0, "exemplars": [{"asInt": "-9223372036854775808",
                                                           "filteredAttributes": []}]}]}},
        {"name": "g", "description": None, "gauge": {"dataPoints": [{"asDouble": 0}, {"asInt": -1}, {}]}},
        {"name": "e", "exponentialHistogram": {"dataPoints": [
            {"scale": -10, "negative": {"offset": -3, "bucketCounts": ["18446744073709551615"]}}]}},
    ]}],
}]}

TRICKY_LOGS = {"resource_logs": [{"scope_logs": [{"log_records": [
    {"body": {"stringValue": ""}, "severityNumber": 0, "severityText": "",
     "attributes": [{"key": "", "value": {}}, {"key": "b", "value": {"bytesValue": "-_8"}},
                    {"key": "i", "value": {"intValue": "-5"}}, {"key": "f", "value": {"boolValue": False}},
                    {"key": "d", "value": {"doubleValue": "1.25"}}],
     "droppedAttributesCount": 4294967295, "futureField": [1, 2, 3], "eventName": "checkout"}]}]}]}


def _reference(signal: Signal, doc: dict[str, object]) -> bytes:
    """json_format's reading of a document without hex ids."""
    msg = REQUEST_TYPES[signal]()
    json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    data: bytes = msg.SerializeToString()
    return data


@pytest.mark.parametrize(("signal", "doc"), [(Signal.METRICS, TRICKY_METRICS), (Signal.LOGS, TRICKY_LOGS)])
def test_direct_encoding_matches_json_format_byte_for_byte(signal: Signal, doc: dict[str, object]) -> None:
    assert json_to_proto(signal, orjson.dumps(doc)) == \
        _reference(signal, doc)


def test_optional_fields_keep_explicit_zero() -> None:
    data = json_to_proto(Signal.METRICS, orjson.dumps(TRICKY_METRICS))
    dp = ExportMetricsServiceRequest.FromString(data).resource_metrics[0].scope_metrics[0].metrics[0] \
        .histogram.data_points[0]
    assert dp.HasField("sum") and dp.sum == 0 and dp.HasField("min")
    assert ExportMetricsServiceRequest.FromString(data).resource_metrics[0].HasField("resource")


@pytest.mark.parametrize(("doc", "needle"), [
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"flags": -1}]}]}]},
     "resourceLogs[0].scopeLogs[0].logRecords[0].flags: -1 is out of range"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "LOUD"}]}]}]}, "not a value of"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"boolValue": "yes"}}]}]}]},
     "body.boolValue: 'yes' is not true or false"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"bytesValue": "***"}}]}]}]}, "not base64"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": 1}]}]}]}]},
     "attributes[0].key: 1 is not a string"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": {"key": "a"}}]}]}]},
     "attributes: expected a JSON array"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": ["x"]}]}]}, "logRecords[0]: expected a JSON object"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": 1.5}]}]}]}, "is not an integer"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "18446744073709551616"}]}]}]},
     "out of range"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"doubleValue": "fast"}}]}]}]},
     "not a number"),
    ({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"bytesValue": "\u00e9"}}]}]}]}, "not base64"),
    *[({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"attributes": [{"key": "n", "value": {"intValue": x}}]}]}]}]},
       "logRecords[0].attributes[0].value.intValue: ") for x in ("--5", "\u00b2", "9" * 5000, "1" * 21)],
])
def test_direct_encoding_errors_name_the_field(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(WireError) as err:
        json_to_proto(Signal.LOGS, orjson.dumps(doc))
    assert needle in str(err.value)
    assert str(err.value).startswith("invalid OTLP/JSON logs request: ")


# --- the direct decoder against json_format.MessageToDict -------------------------------------


def _hex_ids(node: object) -> object:
    """json_format's output with base64 ids turned into OTLP's hex ids."""
    if isinstance(node, list):
        return [_hex_ids(x) for x in node]
    if isinstance(node, dict):
        return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v)
                for k, v in node.items()}
    return node


def _reference_json(signal: Signal, data: bytes) -> object:
    msg = REQUEST_TYPES[signal].FromString(data)
    return _hex_ids(json_format.MessageToDict(msg, use_integers_for_enums=True))


@pytest.mark.parametrize("signal", list(Signal))
def test_proto_to_json_matches_json_format(signal: Signal) -> None:
    data = payload(signal, resources=2)
    assert orjson.loads(proto_to_json(signal, data)) == _reference_json(signal, data)


@pytest.mark.parametrize(("signal", "doc"), [(Signal.METRICS, TRICKY_METRICS), (Signal.LOGS, TRICKY_LOGS)])
def test_proto_to_json_matches_json_format_on_tricky_values(signal: Signal, doc: dict[str, object]) -> None:
    data = _reference(signal, doc)
    assert orjson.loads(proto_to_json(signal, data)) == _reference_json(signal, data)


def _field(num: int, body: bytes) -> bytes:
    return encode_varint(num << 3 | 2) + encode_varint(len(body)) + body


def test_proto_to_json_merges_repeated_message_fields_and_oneofs_like_a_parser() -> None:
    # A LogRecord whose `body` comes twice (string, then int: the oneof's last member wins)
    # and a ResourceLogs with two `resource` fields (merged: attributes concatenate).
    rec = _field(5, AnyValue(string_value="first").SerializeToString()) + \
        _field(5, AnyValue(int_value=7).SerializeToString())
    rl = _field(1, resource("a").SerializeToString()) + _field(2, _field(2, rec)) + \
        _field(1, resource("b").SerializeToString())
    data = _field(1, rl)
    doc = orjson.loads(proto_to_json(Signal.LOGS, data))
    assert doc == _reference_json(Signal.LOGS, data)
    assert doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"] == {"intValue": "7"}
    assert len(doc["resourceLogs"][0]["resource"]["attributes"]) == 2 * len(resource().attributes)


def test_proto_to_json_keeps_explicit_zero_of_optional_and_oneof_fields() -> None:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="z")
    m.histogram.data_points.add(sum=0.0, count=0)
    m2 = req.resource_metrics[0].scope_metrics[0].metrics.add(name="g")
    m2.gauge.data_points.add(as_int=0)
    doc = orjson.loads(proto_to_json(Signal.METRICS, req.SerializeToString()))
    metrics = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert metrics[0]["histogram"]["dataPoints"] == [{"sum": 0.0}]
    assert metrics[1]["gauge"]["dataPoints"] == [{"asInt": "0"}]


@pytest.mark.parametrize("signal", list(Signal))
def test_proto_to_json_on_corrupt_bytes_raises_only_wire_error(signal: Signal) -> None:
    data = payload(signal, **({"points": 2} if signal is Signal.METRICS else {}))
    rng = random.Random(11)
    for _ in range(200):
        corrupt = bytearray(data[:2000] if signal is not Signal.METRICS else data)
        for _ in range(rng.randrange(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        with contextlib.suppress(WireError):
            orjson.loads(proto_to_json(signal, bytes(corrupt)))


_ODD_VALUES: list[object] = ["--5", "\u00b2", "9" * 5000, "\u00e9", "-", "", " 1", "1e999", "NaN", -1,
                              1 << 63, 1e308, -0.0, True, None, [], {}, [1, "x"], {"a": "b"}, "AAAA",
                              "zz" * 8]


def _with_odd_leaves(node: object, rng: random.Random) -> object:
    if isinstance(node, dict):
        return {k: _with_odd_leaves(v, rng) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_odd_leaves(v, rng) for v in node]
    return rng.choice(_ODD_VALUES) if rng.random() < 0.3 else node


@pytest.mark.parametrize("signal", list(Signal))
def test_json_to_proto_on_odd_values_raises_only_wire_error(signal: Signal) -> None:
    small = {Signal.TRACES: {"spans_per_request": 4, "events": 1}, Signal.LOGS: {"records": 4},
             Signal.METRICS: {"points": 1}}[signal]
    doc = orjson.loads(proto_to_json(signal, payload(signal, **small)))
    rng = random.Random(5)
    for _ in range(200):
        with contextlib.suppress(WireError):
            json_to_proto(signal, orjson.dumps(_with_odd_leaves(doc, rng)))


def test_deep_nesting_is_refused_not_crashed() -> None:
    depth = 300  # 900 JSON levels: within what orjson reads, beyond Python's recursion limit
    value = '{"arrayValue": {"values": [' * depth + '{"stringValue": "leaf"}' + "]}}" * depth
    body = ('{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": ' + value + "}]}]}]}").encode()
    with pytest.raises(WireError, match="nested too deeply"):
        json_to_proto(Signal.LOGS, body)
    inner = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(2000):
        inner = _field(5, _field(1, inner))  # AnyValue.array_value -> ArrayValue.values
    data = _field(1, _field(2, _field(2, _field(5, inner))))
    with pytest.raises(WireError, match="nested too deeply"):
        proto_to_json(Signal.LOGS, data)
