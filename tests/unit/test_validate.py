"""The edge's content check: what it refuses, what it lets through, and that what it lets
through converts in every sink's decoder (``gateway/validate.py``)."""

from __future__ import annotations

import math
import struct

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from gateway.otlp_json import json_to_proto, proto_to_json
from gateway.signals import ATTR_CORRELATION, ATTR_TENANT, Signal
from gateway.validate import MAX_DEPTH, MAX_NESTED_VALUES, check_resource
from gateway.wire import TooManyItems, encode_varint, prepare
from tests.otlp_payloads import payload

ATTRS = ((ATTR_TENANT, "acme"), (ATTR_CORRELATION, "0192a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b"))


def lf(num: int, body: bytes) -> bytes:
    """A length-delimited field."""
    return encode_varint(num << 3 | 2) + encode_varint(len(body)) + body


def string_value(s: bytes) -> bytes:
    return lf(1, s)  # AnyValue.string_value


def nested(kind: str, levels: int) -> bytes:
    """An AnyValue holding ``levels`` arrays (or kvlists) inside one another around a string."""
    v = string_value(b"x")
    for _ in range(levels):
        v = lf(5, lf(1, v)) if kind == "array" else lf(6, lf(1, lf(1, b"k") + lf(2, v)))
    return v


def log_rx(attr_value: bytes = b"", body: bytes = b"", name: bytes = b"a") -> bytes:
    """A ResourceLogs body: one log record with attribute ``name`` = ``attr_value``."""
    lr = b""
    if body:
        lr += lf(5, body)  # LogRecord.body
    if attr_value:
        lr += lf(6, lf(1, name) + lf(2, attr_value))  # LogRecord.attributes
    return lf(2, lf(2, lr))  # ResourceLogs.scope_logs > ScopeLogs.log_records


def exemplar_rx(attr_value: bytes) -> bytes:
    """A ResourceMetrics body whose histogram point's exemplar has one attribute: the deepest
    place OTLP puts an AnyValue (7 levels below the ResourceMetrics)."""
    exemplar = lf(7, lf(1, b"a") + lf(2, attr_value))  # Exemplar.filtered_attributes
    point = b"\x21" + struct.pack("<Q", 1) + lf(8, exemplar)  # count, exemplars
    metric = lf(1, b"m") + lf(9, lf(1, point))  # name, histogram.data_points
    return lf(2, lf(2, metric))


def request(rx_bodies: list[bytes]) -> bytes:
    return b"".join(lf(1, b) for b in rx_bodies)


def test_sixteen_nested_values_fit_in_the_deepest_place_otlp_has() -> None:
    for kind in ("array", "kvlist"):
        assert check_resource(Signal.METRICS, exemplar_rx(nested(kind, MAX_NESTED_VALUES))) is None


@pytest.mark.parametrize(("kind", "most"), [("array", 25), ("kvlist", 17)])
def test_nesting_past_the_limit_is_refused(kind: str, most: int) -> None:
    # a log attribute's AnyValue is 4 levels below the ResourceLogs; arrays take 2, kvlists 3
    assert 4 + (2 if kind == "array" else 3) * most <= MAX_DEPTH
    assert check_resource(Signal.LOGS, log_rx(nested(kind, most))) is None
    reason = check_resource(Signal.LOGS, log_rx(nested(kind, most + 1)))
    assert reason is not None and "nested" in reason
    assert check_resource(Signal.LOGS, log_rx(nested(kind, 100))) is not None


def test_invalid_utf8_in_any_string_field_is_refused() -> None:
    for rx in (log_rx(body=string_value(b"\xff")), log_rx(string_value(b"ok"), name=b"\xc3("),
               lf(1, lf(1, lf(1, b"k\xff") + lf(2, string_value(b"v"))))):  # resource attribute key
        assert check_resource(Signal.LOGS, rx) == "a string field is not valid UTF-8"


def test_request_with_a_bad_resource_keeps_the_good_one() -> None:
    good = log_rx(string_value(b"fine"))
    data = request([good, log_rx(nested("array", 100)), log_rx(body=string_value(b"\xfe"))])
    prepared = prepare(Signal.LOGS, data, ATTRS)
    assert (prepared.items, prepared.rejected_items) == (1, 2)
    assert "resource_logs[1]" in prepared.error and "resource_logs[2]" in prepared.error
    parsed = ExportLogsServiceRequest.FromString(prepared.payload)
    assert len(parsed.resource_logs) == 1
    assert parsed.resource_logs[0].scope_logs[0].log_records[0].attributes[0].value.string_value == "fine"


def test_too_many_items_stops_counting_at_the_limit() -> None:
    data = request([lf(2, b"\x12\x00" * 1001)])  # one scope, 1001 empty log records
    assert prepare(Signal.LOGS, data, ATTRS, max_items=1001).items == 1001
    with pytest.raises(TooManyItems):
        prepare(Signal.LOGS, data, ATTRS, max_items=1000)
    spread = request([lf(2, b"\x12\x00" * 600)] * 2)
    with pytest.raises(TooManyItems):
        prepare(Signal.LOGS, spread, ATTRS, max_items=1000)
    metrics = payload(Signal.METRICS, points=100)
    with pytest.raises(TooManyItems):
        prepare(Signal.METRICS, metrics, ATTRS, max_items=10)


# --- what the edge lets through converts: upb's leniencies, mirrored by the file sink ---------

OVERFLOW = b"\xff" * 9 + b"\x7f"  # a ten-byte varint over 2**64: upb keeps the low 64 bits


@pytest.mark.parametrize(("name", "value"), [
    ("double_value sent as a varint over 2**64", b"\x20" + OVERFLOW),
    ("double_value sent as a fixed32", b"\x25\x00\x00\x80\x3f"),
    ("string_value sent as a varint", b"\x08\x05"),
    ("kvlist_value sent as a fixed64", b"\x31" + b"\x00" * 8),
    ("int_value over 2**64", b"\x18" + OVERFLOW),
    ("bool_value of 7", b"\x10\x07"),
])
def test_accepted_odd_values_convert_to_json(name: str, value: bytes) -> None:
    prepared = prepare(Signal.LOGS, request([log_rx(value)]), ATTRS)
    assert (prepared.items, prepared.rejected_items) == (1, 0), name
    doc = proto_to_json(Signal.LOGS, prepared.payload)
    assert b'"key":"a"' in doc


def test_sint32_scale_as_a_ten_byte_varint_converts_like_protobuf() -> None:
    # ExponentialHistogramDataPoint.scale (sint32, field 6) with 64 bits set: protobuf keeps the
    # low 32 bits, zigzag 0xFFFFFFFF = -2**31
    point = b"\x30" + b"\xff" * 9 + b"\x01"
    metric = lf(1, b"m") + lf(10, lf(1, point))
    data = request([lf(2, lf(2, metric))])
    prepared = prepare(Signal.METRICS, data, ATTRS)
    assert prepared.items == 1 and not prepared.rejected_items
    upb_scale = (ExportMetricsServiceRequest.FromString(prepared.payload)
                 .resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0].scale)
    assert b'"scale":%d' % upb_scale in proto_to_json(Signal.METRICS, prepared.payload)


def test_json_minus_zero_is_a_negative_zero_double() -> None:
    body = (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-0,'
            b'"body":{"doubleValue":-0},"attributes":[{"key":"x-0","value":{"doubleValue": -0 }}]}]}]}]}')
    lr = ExportLogsServiceRequest.FromString(json_to_proto(Signal.LOGS, body)).resource_logs[0] \
        .scope_logs[0].log_records[0]
    assert math.copysign(1.0, lr.body.double_value) == -1.0
    assert math.copysign(1.0, lr.attributes[0].value.double_value) == -1.0
    assert lr.attributes[0].key == "x-0" and lr.time_unix_nano == 0
    assert b'"doubleValue":-0.0' in proto_to_json(Signal.LOGS, json_to_proto(Signal.LOGS, body))
