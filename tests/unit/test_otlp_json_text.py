"""OTLP/JSON strings that are not Unicode: the same answer as protobuf for the same content.

A string field holding bytes that are not UTF-8, or a ``\\ud800`` escape without its pair, costs
its ResourceX only (partial success), as a protobuf string that is not UTF-8 does
(``otlp.validate``); a body that is not JSON at all is still refused whole with a correct message.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from gateway.receivers.encodings import JSON, PROTOBUF
from otlp.json_mapping import json_request, json_to_proto, response_json
from otlp.signals import Signal
from otlp.wire import WireError

MARK = "BAD-TEXT-MARKER"
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
_RX_KEY = {Signal.TRACES: "resourceSpans", Signal.LOGS: "resourceLogs", Signal.METRICS: "resourceMetrics"}


def _attrs(key: str, value: str) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"stringValue": value}}]


def _resource(service: str) -> dict[str, Any]:
    return {"attributes": _attrs("service.name", service)}


def _span(name: str = "GET /cart", key: str = "http.route", value: str = "/cart",
          event: str = "cache.miss", status: str = "ok") -> dict[str, Any]:
    return {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": name, "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000000001",
            "attributes": _attrs(key, value),
            "events": [{"timeUnixNano": "1700000000000000000", "name": event}],
            "status": {"code": 1, "message": status}}


def _log(body: dict[str, Any] | None = None, severity: str = "INFO", key: str = "k",
         value: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"timeUnixNano": "1700000000000000000", "severityText": severity,
            "body": body or {"stringValue": "order placed"},
            "attributes": [{"key": key, "value": value or {"boolValue": True}}]}


def _metric(name: str = "orders", unit: str = "1", key: str = "shop", value: str = "eu") -> dict[str, Any]:
    point = {"timeUnixNano": "1700000000000000000", "asInt": "3", "attributes": _attrs(key, value)}
    return {"name": name, "unit": unit, "description": "orders placed", "gauge": {"dataPoints": [point]}}


def _doc(signal: Signal, resource: dict[str, Any], scope: dict[str, Any], item: dict[str, Any],
         schema_url: str = "https://opentelemetry.io/schemas/1.24.0") -> dict[str, Any]:
    """A request of two ResourceX: the first built from the arguments, the second good."""
    sx, items = {Signal.TRACES: ("scopeSpans", "spans"), Signal.LOGS: ("scopeLogs", "logRecords"),
                 Signal.METRICS: ("scopeMetrics", "metrics")}[signal]
    good_item = _span() if signal is Signal.TRACES else _log() if signal is Signal.LOGS else _metric()
    return {_RX_KEY[signal]: [
        {"resource": resource, sx: [{"scope": scope, items: [item]}], "schemaUrl": schema_url},
        {"resource": _resource("good"), sx: [{"scope": {"name": "lib"}, items: [good_item]}]},
    ]}


_SCOPE = {"name": "lib", "version": "1.0"}
# (signal, the request with MARK where the bad text goes, the path of that field in the ResourceX)
FIELDS: list[tuple[str, Signal, dict[str, Any], str]] = [
    ("span name", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(name=MARK)),
     "scopeSpans[0].spans[0].name"),
    ("span attribute key", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(key=MARK)),
     "scopeSpans[0].spans[0].attributes[0].key"),
    ("span attribute value", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(value=MARK)),
     "scopeSpans[0].spans[0].attributes[0].value.stringValue"),
    ("event name", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(event=MARK)),
     "scopeSpans[0].spans[0].events[0].name"),
    ("status message", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(status=MARK)),
     "scopeSpans[0].spans[0].status.message"),
    ("resource attribute value", Signal.TRACES, _doc(Signal.TRACES, _resource(MARK), _SCOPE, _span()),
     "resource.attributes[0].value.stringValue"),
    ("scope name", Signal.TRACES, _doc(Signal.TRACES, _resource("bad"), {"name": MARK}, _span()),
     "scopeSpans[0].scope.name"),
    ("scope version", Signal.LOGS,
     _doc(Signal.LOGS, _resource("bad"), {"name": "l", "version": MARK}, _log()),
     "scopeLogs[0].scope.version"),
    ("schema url", Signal.LOGS, _doc(Signal.LOGS, _resource("bad"), _SCOPE, _log(), schema_url=MARK),
     "schemaUrl"),
    ("log body", Signal.LOGS, _doc(Signal.LOGS, _resource("bad"), _SCOPE, _log(body={"stringValue": MARK})),
     "scopeLogs[0].logRecords[0].body.stringValue"),
    ("log severity text", Signal.LOGS, _doc(Signal.LOGS, _resource("bad"), _SCOPE, _log(severity=MARK)),
     "scopeLogs[0].logRecords[0].severityText"),
    ("string in a kvlist", Signal.LOGS, _doc(Signal.LOGS, _resource("bad"), _SCOPE, _log(
        value={"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": MARK}}]}})),
     "scopeLogs[0].logRecords[0].attributes[0].value.kvlistValue.values[0].value.stringValue"),
    ("string in an array", Signal.LOGS, _doc(Signal.LOGS, _resource("bad"), _SCOPE, _log(
        body={"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": MARK}]}})),
     "scopeLogs[0].logRecords[0].body.arrayValue.values[1].stringValue"),
    ("metric name", Signal.METRICS, _doc(Signal.METRICS, _resource("bad"), _SCOPE, _metric(name=MARK)),
     "scopeMetrics[0].metrics[0].name"),
    ("metric unit", Signal.METRICS, _doc(Signal.METRICS, _resource("bad"), _SCOPE, _metric(unit=MARK)),
     "scopeMetrics[0].metrics[0].unit"),
    ("data point attribute key", Signal.METRICS,
     _doc(Signal.METRICS, _resource("bad"), _SCOPE, _metric(key=MARK)),
     "scopeMetrics[0].metrics[0].gauge.dataPoints[0].attributes[0].key"),
    ("data point attribute value", Signal.METRICS,
     _doc(Signal.METRICS, _resource("bad"), _SCOPE, _metric(value=MARK)),
     "scopeMetrics[0].metrics[0].gauge.dataPoints[0].attributes[0].value.stringValue"),
]
# (name, the bad text in JSON, the same text's bytes in protobuf, where in the string it goes wrong)
TEXTS = [
    ("lone high surrogate escape", rb"ab\ud800", b"ab\xed\xa0\x80", 2),
    ("lone low surrogate escape", rb"\udc00", b"\xed\xb0\x80", 0),
    ("swapped surrogate pair", rb"\ude00\ud83d", b"\xed\xb8\x80\xed\xa0\xbd", 0),
    ("raw bytes not UTF-8", b"GET \xff\xfe", b"GET \xff\xfe", 4),
    ("truncated UTF-8 sequence", b"order \xc3( placed", b"order \xc3( placed", 6),
    ("UTF-8 of a surrogate", b"k\xed\xa0\x80", b"k\xed\xa0\x80", 1),
]


def _json_body(doc: dict[str, Any], text: bytes) -> bytes:
    body = json.dumps(doc).encode()
    assert body.count(MARK.encode()) == 1
    return body.replace(MARK.encode(), text)


def _proto_body(signal: Signal, doc: dict[str, Any], text: bytes) -> bytes:
    raw = json_to_proto(signal, json.dumps(doc).encode())
    marker = MARK.encode()
    assert raw.count(marker) == 1 and len(text) <= len(marker)
    # Same length as the marker, so the framing around it holds; the padding is plain ASCII.
    return raw.replace(marker, text + marker[len(text):])


def _good_only(signal: Signal, doc: dict[str, Any]) -> bytes:
    good = copy.deepcopy(doc)
    del good[_RX_KEY[signal]][0]
    return json_to_proto(signal, json.dumps(good).encode())


@pytest.mark.parametrize(("json_text", "pb_text", "at"), [t[1:] for t in TEXTS], ids=[t[0] for t in TEXTS])
@pytest.mark.parametrize(("signal", "doc", "path"), [f[1:] for f in FIELDS], ids=[f[0] for f in FIELDS])
def test_bad_text_drops_only_its_resource_with_the_answer_protobuf_gives(
        signal: Signal, doc: dict[str, Any], path: str, json_text: bytes, pb_text: bytes, at: int) -> None:
    key = _RX_KEY[signal]
    decoded = json_request(signal, _json_body(doc, json_text))
    assert decoded.rejected_items == 1
    assert decoded.error == (f"dropped 1 invalid {key}: {key}[0]: {path}: "
                             f"not valid UTF-8 (character {at} of the string)")
    assert decoded.payload == _good_only(signal, doc)

    over_json = JSON.prepare(signal, _json_body(doc, json_text), (), 1000)
    over_pb = PROTOBUF.prepare(signal, _proto_body(signal, doc, pb_text), (), 1000)
    assert (over_json.items, over_json.rejected_items) == (over_pb.items, over_pb.rejected_items) == (1, 1)
    assert over_json.payload == over_pb.payload
    assert "not valid UTF-8" in over_pb.error and "not valid UTF-8" in over_json.error
    assert orjson.loads(response_json(over_json.rejected_items, over_json.error, signal)) == {
        "partialSuccess": {_REJECTED[signal]: "1", "errorMessage": over_json.error}}


_REJECTED = {Signal.TRACES: "rejectedSpans", Signal.LOGS: "rejectedLogRecords",
             Signal.METRICS: "rejectedDataPoints"}


def test_bad_text_in_every_resource_leaves_an_empty_request() -> None:
    doc = _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(name=MARK))
    doc["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["name"] = "second" + MARK
    body = json.dumps(doc).encode().replace(MARK.encode(), rb"\ud800")
    decoded = json_request(Signal.TRACES, body)
    assert (decoded.payload, decoded.rejected_items) == (b"", 2)
    assert decoded.error == (
        "dropped 2 invalid resourceSpans: "
        "resourceSpans[0]: scopeSpans[0].spans[0].name: not valid UTF-8 (character 0 of the string); "
        "resourceSpans[1]: scopeSpans[0].spans[0].name: not valid UTF-8 (character 6 of the string)")


def test_surrogate_pairs_and_non_ascii_text_are_kept() -> None:
    doc = _doc(Signal.TRACES, _resource("bad"), _SCOPE, _span(name=MARK))
    decoded = json_request(Signal.TRACES, _json_body(doc, rb"caf\u00e9 \ud83d\ude00 " + "Grüße".encode()))
    assert (decoded.rejected_items, decoded.error) == (0, "")
    assert "café 😀 Grüße".encode() in decoded.payload


def test_bad_text_in_an_unknown_field_is_ignored() -> None:
    body = b'{"resourceSpans": [{"futureField": "\xff\\ud800", "scopeSpans": [{"spans": [{"name": "ok"}]}]}]}'
    decoded = json_request(Signal.TRACES, body)
    assert (decoded.rejected_items, decoded.error) == (0, "")
    assert decoded.payload == json_to_proto(Signal.TRACES, b'{"resourceSpans": [{"scopeSpans": [{"spans": '
                                                           b'[{"name": "ok"}]}]}]}')


def test_bad_text_beside_minus_zero_keeps_its_sign() -> None:
    body = (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m\xff", "gauge": {"dataPoints": '
            b'[{"asDouble": 1}]}}]}]}, {"scopeMetrics": [{"metrics": [{"name": "z", "gauge": {"dataPoints": '
            b'[{"asDouble": -0}]}}]}]}]}')
    decoded = json_request(Signal.METRICS, body)
    assert decoded.rejected_items == 1
    assert decoded.payload == json_to_proto(
        Signal.METRICS, b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "z", "gauge": '
                        b'{"dataPoints": [{"asDouble": -0.0}]}}]}]}]}')


def test_an_error_quoting_bad_text_is_still_utf8() -> None:
    body = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "\\ud800\xff"}]}]}]}'
    decoded = json_request(Signal.TRACES, body)
    assert decoded.rejected_items == 1
    assert decoded.error == ("dropped 1 invalid resourceSpans: resourceSpans[0]: "
                             "scopeSpans[0].spans[0].traceId: "
                             "'\\ud800\\udcff' is not a hex-encoded id of 16 bytes")
    decoded.error.encode()  # the answer carries it as UTF-8


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff\xfe\x00\x01", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b'{"resourceSpans": [{"name": "\xff"},,]}', "invalid JSON: Expecting value: line 1 column 34 (char 33)"),
    (b'{"resourceSpans": "\\ud800" \xff}',
     "invalid JSON: Expecting ',' delimiter: line 1 column 28 (char 27)"),
    (b'["\\ud800"]', "OTLP/JSON traces request must be a JSON object, got list"),
    (b'{"resourceSpans": "\\ud800"}',
     "invalid OTLP/JSON traces request: resourceSpans: expected a JSON array"),
    (b"[" * 100_000 + b'"\xff"', "invalid JSON: nested too deeply"),
    (b'{"a": ' * 100_000 + b'"\xff"', "invalid JSON: nested too deeply"),
])
def test_a_body_that_is_not_json_is_refused_whole_with_a_correct_message(body: bytes, message: str) -> None:
    with pytest.raises(WireError) as err:
        json_request(Signal.TRACES, body)
    assert str(err.value) == message
