"""The edge's content check: what it refuses, what it lets through, and that what it lets
through converts in every sink's decoder (``otlp/validate.py``)."""

from __future__ import annotations

import math
import struct

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp.json_mapping import json_to_proto, proto_to_json
from otlp.signals import ATTR_CORRELATION, ATTR_TENANT, Signal
from otlp.validate import MAX_NESTED_VALUES, check_resource
from otlp.wire import TooManyItems, WireError, encode_varint, prepare
from tests.otlp_payloads import payload

OVERFLOW = b"\xff" * 9 + b"\x7f"  # a ten-byte varint over 2**64: upb keeps the low 64 bits, Go refuses it
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


@pytest.mark.parametrize("kind", ["array", "kvlist"])
@pytest.mark.parametrize("where", ["log attribute", "log body", "resource attribute"])
def test_nesting_past_the_limit_is_refused(kind: str, where: str) -> None:
    def rx(value: bytes) -> bytes:
        if where == "log attribute":
            return log_rx(value)
        if where == "log body":
            return log_rx(body=value)
        return lf(1, lf(1, lf(1, b"k") + lf(2, value)))

    assert check_resource(Signal.LOGS, rx(nested(kind, MAX_NESTED_VALUES))) is None
    for levels in (MAX_NESTED_VALUES + 1, 100, 5000):
        reason = check_resource(Signal.LOGS, rx(nested(kind, levels)))
        assert reason is not None and "nested more than 16 deep" in reason, reason


def test_tags_and_lengths_over_five_bytes_are_refused_as_upb_does() -> None:
    padded_tag = b"\x8a\x80\x80\x80\x80\x00" + b"\x02ok"  # key (field 1) in six bytes
    padded_len = b"\x0a\x82\x80\x80\x80\x80\x00ok"
    for kv in (padded_tag, padded_len):
        reason = check_resource(Signal.LOGS, lf(2, lf(2, lf(6, kv))))
        assert reason is not None and "longer than" in reason, reason
    five = b"\x8a\x80\x80\x80\x00" + b"\x02ok"
    assert check_resource(Signal.LOGS, lf(2, lf(2, lf(6, five)))) is None


def test_unknown_top_level_fields_are_kept_if_well_formed() -> None:
    good = request([log_rx(string_value(b"v"))])
    newer = good + b"\x12\x03abc"  # a field 2 a newer OTLP might add
    assert prepare(Signal.LOGS, newer, ATTRS).payload.endswith(b"\x12\x03abc")
    with pytest.raises(WireError, match="varint over 64 bits"):
        prepare(Signal.LOGS, good + b"\x18" + OVERFLOW, ATTRS)


def test_invalid_utf8_in_any_string_field_is_refused() -> None:
    for rx, where in ((log_rx(body=string_value(b"\xff")), "AnyValue.string_value"),
                      (log_rx(string_value(b"ok"), name=b"\xc3("), "KeyValue.key"),
                      (log_rx(string_value(b"\xed\xa0\x80")), "AnyValue.string_value"),  # a surrogate
                      (log_rx(string_value(b"\xc0\xaf")), "AnyValue.string_value"),  # overlong "/"
                      (lf(1, lf(1, lf(1, b"k\xff") + lf(2, string_value(b"v")))), "KeyValue.key")):
        reason = check_resource(Signal.LOGS, rx)
        assert reason is not None and reason.startswith(f"{where}: not valid UTF-8"), reason
    assert check_resource(Signal.LOGS, log_rx(string_value("żółw 🐢".encode()))) is None


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


# --- what parsers read differently: refused at the edge, tolerated by the file sink -------------



@pytest.mark.parametrize(("name", "value", "why"), [
    ("double_value sent as a varint over 2**64", b"\x20" + OVERFLOW,
     "AnyValue.double_value: varint over 64 bits"),
    ("double_value sent as a varint", b"\x20\x05", "AnyValue.double_value: wrong wire type"),
    ("double_value sent as a fixed32", b"\x25\x00\x00\x80\x3f", "AnyValue.double_value: wrong wire type"),
    ("string_value sent as a varint", b"\x08\x05", "AnyValue.string_value: wrong wire type"),
    ("kvlist_value sent as a fixed64", b"\x31" + b"\x00" * 8, "AnyValue.kvlist_value: wrong wire type"),
    ("int_value over 2**64", b"\x18" + OVERFLOW, "AnyValue.int_value: varint over 64 bits"),
    ("int_value of 11 bytes", b"\x18" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
    ("a group", b"\x0b\x0c", "groups are not used"),
    ("field number 0", b"\x02\x00", "field number 0"),
])
def test_values_parsers_read_differently_are_refused(name: str, value: bytes, why: str) -> None:
    good = log_rx(string_value(b"fine"))
    prepared = prepare(Signal.LOGS, request([log_rx(value), good]), ATTRS)
    assert (prepared.items, prepared.rejected_items) == (1, 1), name
    assert why in prepared.error, prepared.error
    # The file sink's converter reads such bytes as protobuf does (defence in depth): it converts,
    # or says what is wrong with a WireError, which the sink sets aside; nothing else escapes.
    try:
        assert b'"key":"a"' in proto_to_json(Signal.LOGS, request([log_rx(value)]))
    except WireError:
        assert name in ("int_value of 11 bytes", "a group")


@pytest.mark.parametrize(("name", "value"), [
    ("an unknown field number, any wire type", b"\x48\x01\x55\x00\x00\x00\x00\x62\x01x"),
    ("a negative int_value, ten bytes", b"\x18" + b"\xff" * 9 + b"\x01"),
    ("bool_value of 7", b"\x10\x07"),
    ("a double NaN", b"\x21" + struct.pack("<d", math.nan)),
    ("an empty AnyValue", b""),
])
def test_valid_odd_values_are_accepted(name: str, value: bytes) -> None:
    kv = lf(1, b"a") + (lf(2, value) if value or name.startswith("an empty") else b"")
    rx = lf(2, lf(2, lf(6, kv)))
    assert check_resource(Signal.LOGS, rx) is None, name
    assert b'"key":"a"' in proto_to_json(Signal.LOGS, request([rx]))


def test_out_of_range_32_bit_values_are_refused() -> None:
    # ExponentialHistogramDataPoint.scale (sint32, field 6) as a ten-byte varint: parsers keep the
    # low 32 bits, so the store would hold a scale the client never sent
    point = b"\x30" + b"\xff" * 9 + b"\x01"
    rx = lf(2, lf(2, lf(1, b"m") + lf(10, lf(1, point))))
    why = check_resource(Signal.METRICS, rx) or ""
    assert "ExponentialHistogramDataPoint.scale: value out of range" in why
    assert b'"scale":' in proto_to_json(Signal.METRICS, request([rx]))  # converts like protobuf
    # LogRecord.severity_number (enum, field 2) of 2**31 and dropped_attributes_count (uint32) of 2**32
    for lr in (b"\x10" + encode_varint(1 << 31), b"\x38" + encode_varint(1 << 32)):
        assert "out of range" in (check_resource(Signal.LOGS, lf(2, lf(2, lr))) or "")
    assert check_resource(Signal.LOGS, lf(2, lf(2, b"\x10" + encode_varint((1 << 64) - 1)))) is None  # -1


def test_packed_and_unpacked_repeated_fields_are_both_accepted() -> None:
    # HistogramDataPoint.bucket_counts (repeated fixed64, 6), explicit_bounds (repeated double, 7)
    packed = lf(6, struct.pack("<2Q", 1, 2)) + lf(7, struct.pack("<d", 1.0))
    unpacked = (b"\x31" + struct.pack("<Q", 1) + b"\x31" + struct.pack("<Q", 2)
                + b"\x39" + struct.pack("<d", 1.0))
    for point in (packed, unpacked):
        assert check_resource(Signal.METRICS, lf(2, lf(2, lf(9, lf(1, point))))) is None
    bad = lf(6, b"\x00" * 9)
    assert "packed field length" in (check_resource(Signal.METRICS, lf(2, lf(2, lf(9, lf(1, bad))))) or "")


@pytest.mark.parametrize("signal", list(Signal))
def test_what_sdks_and_our_json_write_passes(signal: Signal) -> None:
    data = payload(signal)
    checked = prepare(signal, data, ATTRS)
    assert not checked.rejected_items
    # the check counts the items in C; the framing walk counts them in Python: the same number
    assert checked.items == prepare(signal, data, ATTRS, check=False).items > 0
    assert not prepare(signal, json_to_proto(signal, proto_to_json(signal, data)), ATTRS).rejected_items


def test_json_minus_zero_is_a_negative_zero_double() -> None:
    body = (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-0,'
            b'"body":{"doubleValue":-0},"attributes":[{"key":"x-0","value":{"doubleValue": -0 }}]}]}]}]}')
    lr = ExportLogsServiceRequest.FromString(json_to_proto(Signal.LOGS, body)).resource_logs[0] \
        .scope_logs[0].log_records[0]
    assert math.copysign(1.0, lr.body.double_value) == -1.0
    assert math.copysign(1.0, lr.attributes[0].value.double_value) == -1.0
    assert lr.attributes[0].key == "x-0" and lr.time_unix_nano == 0
    assert b'"doubleValue":-0.0' in proto_to_json(Signal.LOGS, json_to_proto(Signal.LOGS, body))


def test_a_resource_with_a_padded_tag_or_length_is_refused_like_upb_does() -> None:
    rx = log_rx(string_value(b"v"))
    padded_tag = b"\x8a\x80\x80\x80\x80\x00" + encode_varint(len(rx)) + rx
    padded_len = b"\x0a" + bytes([len(rx) | 0x80]) + b"\x80\x80\x80\x80\x00" + rx
    for data in (padded_tag, padded_len):
        with pytest.raises(WireError, match="longer than 5 bytes"):
            prepare(Signal.LOGS, data, ATTRS)
    five = b"\x8a\x80\x80\x80\x00" + encode_varint(len(rx)) + rx
    assert prepare(Signal.LOGS, five, ATTRS).items == 1


@pytest.mark.parametrize(("signal", "where", "rx"), [
    (Signal.TRACES, "Span.trace_id", lf(2, lf(2, lf(1, b"t" * 15) + lf(2, b"s" * 8)))),
    (Signal.TRACES, "Span.span_id", lf(2, lf(2, lf(1, b"t" * 16) + lf(2, b"s" * 9)))),
    (Signal.TRACES, "Span.parent_span_id", lf(2, lf(2, lf(1, b"t" * 16) + lf(2, b"s" * 8) + lf(4, b"abc")))),
    (Signal.TRACES, "Link.trace_id",
     lf(2, lf(2, lf(1, b"t" * 16) + lf(2, b"s" * 8) + lf(13, lf(1, b"t" * 17))))),
    (Signal.LOGS, "LogRecord.span_id", lf(2, lf(2, lf(10, b"s" * 7)))),
    (Signal.METRICS, "Exemplar.trace_id",
     lf(2, lf(2, lf(1, b"m") + lf(5, lf(1, lf(5, lf(5, b"t" * 3))))))),
])
def test_ids_of_the_wrong_length_are_refused_as_pdata_does(signal: Signal, where: str, rx: bytes) -> None:
    reason = check_resource(signal, rx)
    assert reason is not None and reason.startswith(f"{where}: an id of the wrong length"), reason


def test_empty_ids_are_accepted() -> None:
    span = lf(1, b"") + lf(2, b"") + lf(4, b"")
    assert check_resource(Signal.TRACES, lf(2, lf(2, span))) is None
    assert check_resource(Signal.TRACES, lf(2, lf(2, lf(1, b"t" * 16) + lf(2, b"s" * 8)))) is None
