"""The C OTLP/JSON writer (otlp/_otlpjson.c via otlp/proto_json.py) gives exactly the bytes of the
Python reference, json_mapping.proto_to_json, or leaves the request to it: for realistic and
field-complete requests of all three signals, every double, and a bounded fuzz of mutations."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import orjson
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otlp.json_mapping import json_to_proto
from otlp.json_mapping import proto_to_json as reference
from otlp.proto_json import fast_proto_to_json, proto_to_json
from otlp.signals import Signal
from otlp.wire import encode_varint
from tests.otlp_payloads import payload

TEXTS = ["", "plain", 'quote " and \\ back', "ctl \x00\x01\x08\x09\x0a\x0c\x0d\x1b\x1f\x7f", "é ✓ 𝄞 \u2028",
         "x" * 300]


def values() -> list[AnyValue]:
    nested = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="a", value=AnyValue(array_value=ArrayValue(values=[
            AnyValue(int_value=-1), AnyValue(double_value=0.5), AnyValue()]))),
        KeyValue(key="b", value=AnyValue(bool_value=False))]))
    return [AnyValue(string_value=t) for t in TEXTS] + [
        AnyValue(int_value=0), AnyValue(int_value=-(1 << 63)), AnyValue(int_value=(1 << 63) - 1),
        AnyValue(double_value=-0.0), AnyValue(double_value=math.nan), AnyValue(double_value=-math.inf),
        AnyValue(double_value=1e-7), AnyValue(bool_value=True), AnyValue(bytes_value=b""),
        AnyValue(bytes_value=bytes(range(256))), AnyValue(bytes_value=b"ab"), nested, AnyValue()]


def attributes() -> list[KeyValue]:
    return [KeyValue(key=f"k{i}", value=v) for i, v in enumerate(values())] + [KeyValue(key="nothing")]


def full_traces() -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://s")
    rs.resource.attributes.extend(attributes())
    rs.resource.dropped_attributes_count = 3
    ss = rs.scope_spans.add(schema_url="u")
    ss.scope.name, ss.scope.version = "lib", "1.0"
    ss.scope.attributes.extend(attributes()[:3])
    for kind in range(6):
        span = ss.spans.add(trace_id=bytes(range(16)), span_id=bytes(range(8)), parent_span_id=b"\xff" * 8,
                            trace_state="a=b", flags=0xFFFFFFFF, name=TEXTS[kind % len(TEXTS)], kind=kind,
                            start_time_unix_nano=(1 << 64) - 1, end_time_unix_nano=kind,
                            dropped_attributes_count=kind, dropped_events_count=1, dropped_links_count=2)
        span.attributes.extend(attributes())
        span.events.add(time_unix_nano=5, name="ev", attributes=attributes()[:2], dropped_attributes_count=1)
        span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="x", flags=1,
                       attributes=attributes()[2:4])
        span.status.code = kind % 3
        span.status.message = "m" if kind else ""
    ss.spans.add()  # an empty span: {}
    req.resource_spans.add()  # an empty ResourceSpans
    return req.SerializeToString()


def full_logs() -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(attributes()[:4])
    sl = rl.scope_logs.add()
    for i, body in enumerate(values()):
        sl.log_records.add(time_unix_nano=i, observed_time_unix_nano=i + 1, severity_number=i % 25,
                           severity_text="WARN", body=body, attributes=attributes()[i:i + 3],
                           dropped_attributes_count=i, flags=i, trace_id=b"\x0a" * 16 if i % 2 else b"",
                           span_id=b"\x0b" * 8, event_name="e" if i % 3 else "")
    return req.SerializeToString()


def full_metrics() -> bytes:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    ex = metrics_pb2.Exemplar(filtered_attributes=attributes()[:2], time_unix_nano=9, as_double=-2.5,
                              span_id=b"\x03" * 8, trace_id=b"\x04" * 16)
    m = sm.metrics.add(name="g", description="d", unit="1", metadata=attributes()[:1])
    m.gauge.data_points.add(as_double=1e16, time_unix_nano=1, attributes=attributes()[:2], exemplars=[ex])
    m.gauge.data_points.add(as_int=-5, flags=1)
    m.gauge.data_points.add(as_double=0.0)
    m = sm.metrics.add(name="s")
    m.sum.aggregation_temporality = 2
    m.sum.is_monotonic = True
    m.sum.data_points.add(as_double=123.456, start_time_unix_nano=3)
    m = sm.metrics.add(name="h")
    m.histogram.aggregation_temporality = 1
    m.histogram.data_points.add(count=10, sum=0.0, bucket_counts=[1, 2, 0, 7],
                                explicit_bounds=[0.1, 1e-5, 5e20], min=-1.0, max=math.inf)
    m.histogram.data_points.add(count=0)  # optional sum/min/max unset
    m = sm.metrics.add(name="e")
    p = m.exponential_histogram.data_points.add(scale=-3, zero_count=4, count=9, sum=2.0,
                                                zero_threshold=1e-300)
    p.positive.offset, p.negative.offset = -7, 3
    p.positive.bucket_counts.extend([1, 0, 5])
    m = sm.metrics.add(name="q")
    q = m.summary.data_points.add(count=2, sum=math.nan)
    q.quantile_values.add(quantile=0.99, value=-0.0)
    q.quantile_values.add()
    sm.metrics.add(name="no data")
    return req.SerializeToString()


FULL = {Signal.TRACES: full_traces, Signal.LOGS: full_logs, Signal.METRICS: full_metrics}
SMALL: dict[Signal, dict[str, int]] = {Signal.TRACES: {"spans_per_request": 4}, Signal.LOGS: {"records": 4},
                                      Signal.METRICS: {"points": 2}}


@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)
@pytest.mark.parametrize("build", [
    lambda s: payload(s), lambda s: payload(s, resources=3), lambda s: FULL[s](),
], ids=["realistic", "three-resources", "every-field-kind"])
def test_requests_are_written_in_c_exactly_as_the_reference(signal: Signal, build: Any) -> None:
    body = build(signal)
    fast = fast_proto_to_json(signal, body)
    assert fast is not None
    assert fast == reference(signal, body)


@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)
def test_json_round_trips_through_protobuf_and_back(signal: Signal) -> None:
    body = FULL[signal]()
    text = proto_to_json(signal, body)
    assert proto_to_json(signal, json_to_proto(signal, text)) == text


def gauge_of(value: float) -> bytes:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="g")
    m.gauge.data_points.add(as_double=value)
    return req.SerializeToString()


def test_every_double_is_written_as_orjson_writes_it() -> None:
    rng = random.Random(7)
    doubles = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(3000)]
    doubles += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-25, 25) for _ in range(3000)]
    doubles += [10.0 ** e for e in range(-320, 309)]
    # the last one reads back only from the 16-digit decimal on the far side of the nearest
    doubles += [5e-324, 1.7976931348623157e308, 0.1, 1 / 3, 2.0 ** 53 + 2, -6.243497100631985e+144]
    for value in doubles:
        body = gauge_of(value)
        fast = fast_proto_to_json(Signal.METRICS, body)
        assert fast == reference(Signal.METRICS, body), value
        if math.isfinite(value) and value:
            expected = orjson.dumps(value)
            assert fast is not None and b'"asDouble":' + expected in fast, value


def field(number: int, data: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data


def one_span(span: bytes) -> bytes:
    return field(1, field(2, field(2, span)))


@pytest.mark.parametrize("span", [
    field(5, b"a") + field(5, b"b"),  # a singular field twice: the last one wins
    field(9, field(1, b"k")) + field(5, b"n") + field(9, field(1, b"j")),  # a repeated field split
    field(5, b"\xff"),  # not UTF-8: the reference raises
    field(9, field(1, b"") + field(2, field(1, b"v"))),  # a key sent explicitly empty
    b"\x28\x01",  # name (a string) sent as a varint: an unknown field to protobuf
], ids=["twice", "split", "utf8", "empty-key", "wire-type"])
def test_what_only_the_reference_can_say_is_left_to_it(span: bytes) -> None:
    body = one_span(span)
    assert fast_proto_to_json(Signal.TRACES, body) is None
    try:
        expected = reference(Signal.TRACES, body)
    except Exception as exc:
        with pytest.raises(type(exc)):
            proto_to_json(Signal.TRACES, body)
    else:
        assert proto_to_json(Signal.TRACES, body) == expected


def mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        at = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[at] = rng.randrange(256)
        elif op == 1:
            del data[at:at + rng.randint(1, 8)]
        elif op == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 4))
        else:
            start = rng.randrange(len(data)) if data else 0
            data[at:at] = data[start:start + rng.randint(1, 40)]
    return bytes(data)


@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)
def test_fuzzed_requests_are_written_as_the_reference_or_left_to_it(signal: Signal) -> None:
    rng = random.Random(signal.value)
    seeds = [FULL[signal](), payload(signal, **SMALL[signal])]
    written = 0
    for i in range(3000):
        body = mutate(rng, seeds[i % 2])
        fast = fast_proto_to_json(signal, body)
        try:
            expected: bytes | None = reference(signal, body)
        except Exception:
            expected = None
        if fast is not None:
            written += 1
            assert fast == expected, body.hex()
    assert written > 50  # the fuzz also exercised the C path, not only the hand-over


_RANDOM_SCALARS: dict[int, Any] = {
    FD.TYPE_DOUBLE: lambda r: struct.unpack("<d", r.randbytes(8))[0],
    FD.TYPE_FLOAT: lambda r: struct.unpack("<f", r.randbytes(4))[0],
    FD.TYPE_INT64: lambda r: r.randint(-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SFIXED64: lambda r: r.randint(-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SINT64: lambda r: r.randint(-(1 << 63), (1 << 63) - 1),
    FD.TYPE_UINT64: lambda r: r.randint(0, (1 << 64) - 1),
    FD.TYPE_FIXED64: lambda r: r.randint(0, (1 << 64) - 1),
    FD.TYPE_INT32: lambda r: r.randint(-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SFIXED32: lambda r: r.randint(-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SINT32: lambda r: r.randint(-(1 << 31), (1 << 31) - 1),
    FD.TYPE_UINT32: lambda r: r.randint(0, (1 << 32) - 1),
    FD.TYPE_FIXED32: lambda r: r.randint(0, (1 << 32) - 1),
    FD.TYPE_BOOL: lambda r: r.random() < 0.5,
    FD.TYPE_ENUM: lambda r: r.randint(-3, 30),
    FD.TYPE_STRING: lambda r: "".join(r.choice(TEXTS[3] + TEXTS[4] + "ab") for _ in range(r.randint(0, 6))),
    FD.TYPE_BYTES: lambda r: r.randbytes(r.choice((0, 1, 2, 3, 8, 16))),
}


def fill(rng: random.Random, msg: Any, depth: int) -> None:
    """Random values in a random half of ``msg``'s fields, of every kind, messages ``depth`` deep."""
    for f in msg.DESCRIPTOR.fields:
        if rng.random() < 0.5 or (f.type == FD.TYPE_MESSAGE and depth == 0):
            continue
        if f.type == FD.TYPE_MESSAGE:
            if f.is_repeated:
                for _ in range(rng.randint(0, 3)):
                    fill(rng, getattr(msg, f.name).add(), depth - 1)
            else:
                getattr(msg, f.name).SetInParent()
                fill(rng, getattr(msg, f.name), depth - 1)
        elif f.is_repeated:
            getattr(msg, f.name).extend(_RANDOM_SCALARS[f.type](rng) for _ in range(rng.randint(0, 3)))
        else:
            setattr(msg, f.name, _RANDOM_SCALARS[f.type](rng))


@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)
def test_random_valid_requests_are_all_written_in_c_exactly_as_the_reference(signal: Signal) -> None:
    rng = random.Random(f"valid-{signal.value}")
    for _ in range(300):
        req = signal.spec.request()
        fill(rng, req, 7)
        body = req.SerializeToString()
        fast = fast_proto_to_json(signal, body)
        assert fast is not None, body.hex()
        assert fast == reference(signal, body), body.hex()


@pytest.mark.parametrize("span", [b"", field(5, b"a") + field(5, b"b")], ids=["in-c", "by-the-reference"])
def test_a_json_line_ends_in_its_newline_either_way(span: bytes) -> None:
    body = one_span(span)
    assert proto_to_json(Signal.TRACES, body, b"\n") == reference(Signal.TRACES, body) + b"\n"
