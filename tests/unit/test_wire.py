"""otlp.wire against opentelemetry-proto: the byte walk must agree with a full decode."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp.signals import ATTR_CORRELATION, ATTR_TENANT, Signal
from otlp.wire import (
    WireError,
    encode_attributes,
    encode_varint,
    prepare,
    read_varint,
    split,
    split_spans_by_trace_id,
)
from tests.otlp_payloads import REQUEST_TYPES, item_count, kv, payload, request

ATTRS = ((ATTR_TENANT, "acme"), (ATTR_CORRELATION, "01927f6e-0000-7000-8000-000000000001"))


def _resources(signal: Signal, msg: Any) -> list[Any]:
    return list(getattr(msg, {Signal.TRACES: "resource_spans", Signal.LOGS: "resource_logs",
                                Signal.METRICS: "resource_metrics"}[signal]))


def decode_and_edit(signal: Signal, data: bytes, attrs: tuple[tuple[str, str], ...] = ATTRS) -> Any:
    """What prepare() must be equivalent to: decode, replace our attributes, keep the rest."""
    msg = REQUEST_TYPES[signal].FromString(data)
    keys = {k for k, _ in attrs}
    for rx in _resources(signal, msg):
        keep = [a for a in rx.resource.attributes if a.key not in keys]
        del rx.resource.attributes[:]
        rx.resource.attributes.extend(keep)
        for k, v in attrs:
            rx.resource.attributes.add(key=k, value=AnyValue(string_value=v))
    return msg


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("shape", [{}, {"resources": 3, "scopes": 2}])
def test_prepare_equals_decode_edit_encode(signal: Signal, shape: dict[str, int]) -> None:
    kwargs: dict[str, Any] = dict(shape)
    if signal is Signal.TRACES:
        kwargs["spans_per_request"] = 20
    elif signal is Signal.LOGS:
        kwargs["records"] = 20
    data = payload(signal, **kwargs)
    prepared = prepare(signal, data, ATTRS)
    got = REQUEST_TYPES[signal].FromString(prepared.payload)
    assert got == decode_and_edit(signal, data)
    assert prepared.items == item_count(signal, data)
    assert prepared.rejected_items == 0
    assert prepared.error == ""


def test_forged_tenant_is_replaced_and_other_attributes_kept() -> None:
    data = payload(Signal.TRACES, spans_per_request=3, resource_extra={"tenant.id": "evil", "team": "a"})
    got = ExportTraceServiceRequest.FromString(prepare(Signal.TRACES, data, ATTRS).payload)
    attrs = {a.key: a.value.string_value for a in got.resource_spans[0].resource.attributes}
    assert attrs[ATTR_TENANT] == "acme"
    assert attrs["team"] == "a"
    assert [a.key for a in got.resource_spans[0].resource.attributes].count(ATTR_TENANT) == 1
    assert attrs["service.name"] == "svc-0"


def test_forged_tenant_in_a_second_resource_occurrence_is_replaced() -> None:
    # Two `resource` fields in one ResourceSpans merge on decode; both must be cleaned.
    forged = Resource(attributes=[kv(ATTR_TENANT, "evil"), kv(ATTR_CORRELATION, "x")]).SerializeToString()
    rs_body = (b"\x0a" + encode_varint(len(forged)) + forged) * 2
    data = b"\x0a" + encode_varint(len(rs_body)) + rs_body
    got = ExportTraceServiceRequest.FromString(prepare(Signal.TRACES, data, ATTRS).payload)
    assert [(a.key, a.value.string_value) for a in got.resource_spans[0].resource.attributes] == list(ATTRS)


def test_key_that_is_only_a_substring_is_kept() -> None:
    data = payload(Signal.LOGS, records=1, resource_extra={"my.tenant.id": "x", "tenant.idx": "y"})
    got = REQUEST_TYPES[Signal.LOGS].FromString(prepare(Signal.LOGS, data, ATTRS).payload)
    keys = [a.key for a in got.resource_logs[0].resource.attributes]
    assert "my.tenant.id" in keys and "tenant.idx" in keys


def test_resource_without_resource_field_gets_one() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="x", trace_id=b"t" * 16, span_id=b"s" * 8)
    prepared = prepare(Signal.TRACES, req.SerializeToString(), ATTRS)
    got = ExportTraceServiceRequest.FromString(prepared.payload)
    assert [(a.key, a.value.string_value) for a in got.resource_spans[0].resource.attributes] == list(ATTRS)
    assert prepared.items == 1


@pytest.mark.parametrize("signal", list(Signal))
def test_empty_request(signal: Signal) -> None:
    assert prepare(signal, b"", ATTRS) == prepare(signal, b"", ATTRS)
    prepared = prepare(signal, b"", ATTRS)
    assert (prepared.payload, prepared.items, prepared.rejected_items, prepared.error) == (b"", 0, 0, "")


def test_empty_resource_spans_is_kept_and_enriched() -> None:
    prepared = prepare(Signal.TRACES, b"\x0a\x00", ATTRS)
    got = ExportTraceServiceRequest.FromString(prepared.payload)
    assert len(got.resource_spans) == 1 and prepared.items == 0


def test_unknown_fields_are_kept() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="x")
    # unknown field 99 (varint) at top level, field 77 (bytes) in ResourceSpans,
    # field 55 (fixed32) in the resource
    rs = req.resource_spans[0].SerializeToString() + b"\xea\x04\x03abc"
    res = b"\xbd\x03\x01\x02\x03\x04"
    rs = b"\x0a" + encode_varint(len(res)) + res + rs
    data = b"\x98\x06\x07" + b"\x0a" + encode_varint(len(rs)) + rs
    out = prepare(Signal.TRACES, data, ATTRS).payload
    assert b"\x98\x06\x07" in out and b"\xea\x04\x03abc" in out and b"\xbd\x03\x01\x02\x03\x04" in out
    msg = ExportTraceServiceRequest.FromString(out)
    assert msg.resource_spans[0].scope_spans[0].spans[0].name == "x"
    # and a decode/re-encode keeps them too, so consumers see the same message
    assert ExportTraceServiceRequest.FromString(msg.SerializeToString()) == msg


def test_all_metric_kinds_are_counted() -> None:
    data = payload(Signal.METRICS, points=3, resources=2, scopes=2)
    assert prepare(Signal.METRICS, data, ATTRS).items == 5 * 3 * 2 * 2
    one_kind = {"gauge": 0, "sum": 0, "histogram": 0, "exponential_histogram": 0, "summary": 0}
    msg = REQUEST_TYPES[Signal.METRICS].FromString(data)
    for m in msg.resource_metrics[0].scope_metrics[0].metrics:
        one_kind[str(m.WhichOneof("data"))] += 1
    assert all(v == 1 for v in one_kind.values())


def test_metric_without_data_counts_zero() -> None:
    req = REQUEST_TYPES[Signal.METRICS]()
    req.resource_metrics.add().scope_metrics.add().metrics.extend(
        [metrics_pb2.Metric(name="empty"), metrics_pb2.Metric(name="g", gauge=metrics_pb2.Gauge())])
    assert prepare(Signal.METRICS, req.SerializeToString(), ATTRS).items == 0


@pytest.mark.parametrize("garbage", [
    b"\x0a\x05abc",            # length past the end
    b"\x0a",                   # truncated length
    b"\x0b",                   # group wire type
    b"\x08",                   # truncated varint value
    b"\x0f",                   # wire type 7
    b"\x00\x01",               # field number 0
    b"\x09\x01\x02",           # resource_spans as fixed64
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # varint too long
])
def test_malformed_envelope_raises(garbage: bytes) -> None:
    with pytest.raises(WireError) as err:
        prepare(Signal.TRACES, garbage, ATTRS)
    assert "ExportTraceServiceRequest" in str(err.value)


def test_truncated_real_payload_raises() -> None:
    data = payload(Signal.TRACES, spans_per_request=10)
    with pytest.raises(WireError):
        prepare(Signal.TRACES, data[:-7], ATTRS)


def test_malformed_resource_is_dropped_as_partial_success() -> None:
    good = payload(Signal.TRACES, spans_per_request=4)
    good_rs = good  # one ResourceSpans field
    bad_scope = b"\x12\x03\x12\x09x"  # scope_spans with a span length past its end
    bad_rs = b"\x0a" + encode_varint(len(bad_scope)) + bad_scope
    prepared = prepare(Signal.TRACES, good_rs + bad_rs + good_rs, ATTRS)
    assert prepared.items == 8
    assert prepared.rejected_items == 1
    assert prepared.error.startswith("dropped 1 malformed resource_spans")
    assert "resource_spans[1].scope_spans[0].spans" in prepared.error
    got = ExportTraceServiceRequest.FromString(prepared.payload)
    assert len(got.resource_spans) == 2


def test_dropped_resource_counts_items_seen_before_the_fault() -> None:
    scope = ExportTraceServiceRequest()
    scope.resource_spans.add().scope_spans.add().spans.add(name="a")
    ss = scope.resource_spans[0].scope_spans[0].SerializeToString()
    broken = b"\x12" + encode_varint(len(ss)) + ss + b"\x0a\x05ab"  # then a truncated resource
    data = b"\x0a" + encode_varint(len(broken)) + broken
    prepared = prepare(Signal.TRACES, data, ATTRS)
    assert prepared.items == 0
    assert prepared.payload == b""
    assert prepared.error


@pytest.mark.parametrize("signal", list(Signal))
def test_random_corruption_never_escapes_as_another_exception(signal: Signal) -> None:
    small: dict[str, Any] = {Signal.TRACES: {"spans_per_request": 8}, Signal.LOGS: {"records": 8},
                             Signal.METRICS: {"points": 2}}[signal]
    data = payload(signal, resources=2, **small)
    rng = random.Random(7)
    outcomes = {"refused": 0, "partial": 0, "accepted": 0}
    for _ in range(400):
        corrupt = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        if rng.random() < 0.2:
            del corrupt[rng.randrange(len(corrupt)):]
        try:
            prepared = prepare(signal, bytes(corrupt), ATTRS)
        except WireError:
            outcomes["refused"] += 1
            continue
        outcomes["partial" if prepared.error else "accepted"] += 1
        assert prepared.items + prepared.rejected_items <= item_count(signal, data) * 2
        # what prepare lets through is framed well enough for the Kafka bus to split it
        pieces = split(signal, prepared.payload, 300)
        assert sum(len(p) for p in pieces) >= len(prepared.payload)
        if signal is Signal.TRACES:
            split_spans_by_trace_id(prepared.payload)
    assert all(outcomes.values()), outcomes


# --- split ----------------------------------------------------------------------------------


def _items(signal: Signal, pieces: list[bytes]) -> list[bytes]:
    """Every item (span, log record, data point) serialized, in order, across pieces."""
    out: list[bytes] = []
    for p in pieces:
        msg = REQUEST_TYPES[signal].FromString(p)
        for rx in _resources(signal, msg):
            res = rx.resource.SerializeToString()
            for sx in getattr(rx, {Signal.TRACES: "scope_spans", Signal.LOGS: "scope_logs",
                                   Signal.METRICS: "scope_metrics"}[signal]):
                sc = sx.scope.SerializeToString()
                if signal is Signal.METRICS:
                    for m in sx.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, str(kind)).data_points if kind else []:
                            out.append(res + sc + m.name.encode() + dp.SerializeToString())
                else:
                    for it in sx.spans if signal is Signal.TRACES else sx.log_records:
                        out.append(res + sc + it.SerializeToString())
    return out


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("max_bytes", [600, 2_000, 10_000, 50_000, 10**9])
def test_split_pieces_fit_and_keep_every_item(signal: Signal, max_bytes: int) -> None:
    kwargs: dict[str, Any] = {"resources": 3, "scopes": 2}
    kwargs |= {"points": 6} if signal is Signal.METRICS else {}
    kwargs |= {"spans_per_request": 30} if signal is Signal.TRACES else {}
    kwargs |= {"records": 30} if signal is Signal.LOGS else {}
    data = payload(signal, **kwargs)
    pieces = split(signal, data, max_bytes)
    # a piece may exceed the limit only when it is a single item that cannot fit otherwise
    assert all(len(p) <= max_bytes or len(_items(signal, [p])) == 1 for p in pieces)
    assert _items(signal, pieces) == _items(signal, [data])
    assert _items(signal, [b"".join(pieces)]) == _items(signal, [data])
    if len(data) <= max_bytes:
        assert pieces == [data]


def test_split_item_too_large_alone_comes_out_alone() -> None:
    req = request(Signal.LOGS, records=3)
    req.resource_logs[0].scope_logs[0].log_records[1].body.string_value = "x" * 5000
    data = req.SerializeToString()
    pieces = split(Signal.LOGS, data, 2000)
    assert len([p for p in pieces if len(p) > 2000]) == 1
    assert _items(Signal.LOGS, pieces) == _items(Signal.LOGS, [data])


def test_split_empty_and_bad_input() -> None:
    assert split(Signal.TRACES, b"", 100) == []
    with pytest.raises(ValueError):
        split(Signal.TRACES, b"", 0)
    with pytest.raises(WireError):
        split(Signal.TRACES, b"\x0a\x7f" + b"x" * 200, 100)


# --- split by trace id ----------------------------------------------------------------------


def test_split_spans_by_trace_id() -> None:
    data = payload(Signal.TRACES, spans_per_request=40, traces=5, resources=2, scopes=2)
    by_trace = split_spans_by_trace_id(data)
    assert len(by_trace) == 4 * 5  # each (resource, scope) block has its own 5 traces
    total = 0
    for trace_id, piece in by_trace.items():
        msg = ExportTraceServiceRequest.FromString(piece)
        for rs in msg.resource_spans:
            assert rs.resource.attributes[0].key == "service.name"
            for ss in rs.scope_spans:
                assert ss.scope.name.startswith("scope-")
                assert ss.spans
                assert all(s.trace_id == trace_id for s in ss.spans)
                total += len(ss.spans)
    assert total == 2 * 2 * 40
    assert sorted(_items(Signal.TRACES, list(by_trace.values()))) == sorted(_items(Signal.TRACES, [data]))


def test_split_spans_by_trace_id_keeps_request_shape_for_spans_without_trace_id() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="orphan")
    assert list(split_spans_by_trace_id(req.SerializeToString())) == [b""]


def test_kv_helper_types() -> None:
    assert kv("a", True).value.bool_value is True
    assert kv("a", 3).value.int_value == 3
    assert isinstance(kv("a", "s"), KeyValue)


def test_split_by_trace_id_tolerates_a_span_it_cannot_walk() -> None:
    good = payload(Signal.TRACES, spans_per_request=3, traces=1)
    garbage_span = b"\x12\x03\x0a\x7f\x01"  # span whose first field claims 127 bytes
    ss = _wrap(1, b"") + garbage_span
    data = _wrap(1, _wrap(2, ss))
    # The edge refuses such a span (test_content_check_*); split must still survive one in
    # bytes that did not come through the edge (a topic another producer wrote).
    assert prepare(Signal.TRACES, good + data, ATTRS).rejected_items == 1
    prepared = prepare(Signal.TRACES, good + data, ATTRS, check=False)
    assert prepared.items == 4 and not prepared.error
    by_trace = split_spans_by_trace_id(prepared.payload)
    assert sorted(len(k) for k in by_trace) == [0, 16]
    assert garbage_span in by_trace[b""]


def _wrap(num: int, body: bytes) -> bytes:
    return encode_varint(num << 3 | 2) + encode_varint(len(body)) + body


def test_malformed_metric_is_named_by_its_index() -> None:
    req = request(Signal.METRICS, points=1)
    good = req.resource_metrics[0].scope_metrics[0].SerializeToString()
    bad_metric = _wrap(5, b"\x0a\x09x")  # a gauge whose data point runs past its end
    scope = good + _wrap(2, bad_metric)
    data = _wrap(1, _wrap(2, scope))
    prepared = prepare(Signal.METRICS, data, ATTRS)
    assert prepared.rejected_items == 5 + 1  # the good points and the broken one
    assert "resource_metrics[0].scope_metrics[0].metrics[5]: field 1: length 9" in prepared.error


def test_dropped_resource_counts_items_of_every_scope() -> None:
    req = request(Signal.LOGS, records=3, scopes=3)
    scopes = [sl.SerializeToString() for sl in req.resource_logs[0].scope_logs]
    broken = scopes[0] + b"\x12\x05ab"  # second scope: a record running past its end
    rl = _wrap(2, scopes[0]) + _wrap(2, broken) + _wrap(2, scopes[2])
    prepared = prepare(Signal.LOGS, _wrap(1, rl), ATTRS)
    assert (prepared.items, prepared.rejected_items) == (0, 3 + 4 + 3)
    assert "resource_logs[0].scope_logs[1].log_records: field 2: length 5" in prepared.error


@pytest.mark.parametrize("value", [0, 1, 127, 128, 4095, 4096, 16383, 16384, 2**32, 2**63, 2**64 - 1])
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    assert read_varint(data, 0, len(data)) == (value, len(data))
    assert data == _proto_varint(value)


def test_varint_errors() -> None:
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(WireError, match="truncated"):
        read_varint(b"\x80\x80", 0, 2)
    with pytest.raises(WireError, match="longer than 10 bytes"):
        read_varint(b"\xff" * 11, 0, 11)


def test_encode_attributes_is_what_protobuf_writes() -> None:
    res = Resource(attributes=[kv(ATTR_TENANT, "acme"), kv(ATTR_CORRELATION, "c-1")])
    assert encode_attributes([(ATTR_TENANT, "acme"), (ATTR_CORRELATION, "c-1")]) == res.SerializeToString()


def _proto_varint(value: int) -> bytes:
    """The varint protobuf itself writes: AnyValue.int_value (int64) minus its one-byte tag."""
    data: bytes = AnyValue(int_value=value if value < 2**63 else value - 2**64).SerializeToString()
    return data[1:] if value else b"\x00"
