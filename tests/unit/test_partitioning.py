"""otlp.partitioning: exact buckets per signal, and every item kept whole and once."""

from __future__ import annotations

import zlib

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp import wire
from otlp.partitioning import buckets, metric_bucket, trace_bucket
from otlp.signals import Signal
from tests import otlp_payloads

# crc32 (IEEE) of each trace id, modulo 4 and 6: pinned, since changing the hash moves live traces.
TRACE_BUCKETS = [(bytes(16), 1, 1), (bytes(range(16)), 0, 0), (b"\xff" * 16, 2, 4), (b"", 0, 0)]


@pytest.mark.parametrize(("trace_id", "of4", "of6"), TRACE_BUCKETS)
def test_trace_bucket_is_crc32_of_the_trace_id(trace_id: bytes, of4: int, of6: int) -> None:
    assert (trace_bucket(trace_id, 4), trace_bucket(trace_id, 6)) == (of4, of6)


def traces_with(trace_ids: list[bytes]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add(resource=otlp_payloads.resource(f"svc-{r}"))
        ss = rs.scope_spans.add(scope=otlp_payloads.scope())
        for i, tid in enumerate(trace_ids):
            ss.spans.add(trace_id=tid, span_id=bytes([r, i]) + bytes(6), name=f"span-{r}-{i}")
    return req


def test_spans_go_to_the_bucket_of_their_trace_id_one_request_per_bucket() -> None:
    ids = [bytes(16), bytes(range(16)), b"\xff" * 16, bytes(range(16))]
    out = buckets(Signal.TRACES, traces_with(ids).SerializeToString(), 4)
    assert sorted(out) == [0, 1, 2]
    names = {}
    for bucket, data in out.items():
        req = ExportTraceServiceRequest.FromString(data)
        services = [rs.resource.attributes[0].value.string_value for rs in req.resource_spans]
        assert services == ["svc-0", "svc-1"]
        names[bucket] = [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == {1: ["span-0-0", "span-1-0"], 0: ["span-0-1", "span-0-3", "span-1-1", "span-1-3"],
                     2: ["span-0-2", "span-1-2"]}


def test_one_partition_or_empty_payload_is_left_as_is() -> None:
    data = otlp_payloads.payload(Signal.TRACES)
    assert buckets(Signal.TRACES, data, 1) == {0: data}
    assert buckets(Signal.METRICS, b"", 6) == {}
    with pytest.raises(ValueError):
        buckets(Signal.LOGS, data, 0)


def string_value(s: str) -> bytes:
    return AnyValue(string_value=s).SerializeToString()


@pytest.mark.parametrize(("attrs", "of4", "of6"), [
    ({b"service.name": "checkout", b"service.instance.id": "a"}, 3, 1),             # job "checkout"
    ({b"service.name": "checkout", b"service.namespace": "shop",
      b"service.instance.id": "a"}, 2, 4),                                           # job "shop/checkout"
    ({b"service.name": "checkout", b"service.instance.id": "b"}, 1, 5),
    ({b"service.name": "checkout"}, 3, 3),                                           # no instance
    ({}, 1, 1),
])
def test_metric_bucket_is_crc32_of_job_and_instance(attrs: dict[bytes, str], of4: int, of6: int) -> None:
    encoded = {k: string_value(v) for k, v in attrs.items()}
    assert (metric_bucket(encoded, 4), metric_bucket(encoded, 6)) == (of4, of6)


def test_a_long_string_value_is_read_as_its_text() -> None:
    name = "s" * 200  # a two-byte length prefix
    as_text = metric_bucket({b"service.name": string_value(name)}, 1 << 30)
    assert as_text == zlib.crc32(name.encode() + b"\x00") % (1 << 30)


def metrics_for(services: list[tuple[str, str]]) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for service, instance in services:
        one = otlp_payloads.metrics_request(points=2)
        rm = one.resource_metrics[0]
        rm.resource.CopyFrom(Resource(attributes=[
            KeyValue(key="host.name", value=AnyValue(string_value=f"host-{len(req.resource_metrics)}")),
            KeyValue(key="service.name", value=AnyValue(string_value=service)),
            KeyValue(key="service.instance.id", value=AnyValue(string_value=instance)),
        ]))
        req.resource_metrics.append(rm)
    return req


def test_metrics_go_whole_by_resource_job_and_instance() -> None:
    # checkout/a twice (other host.name: one Prometheus series set), checkout/b once
    req = metrics_for([("checkout", "a"), ("checkout", "b"), ("checkout", "a")])
    data = req.SerializeToString()
    out = buckets(Signal.METRICS, data, 4)
    assert sorted(out) == [1, 3]
    three = ExportMetricsServiceRequest.FromString(out[3])
    hosts = [rm.resource.attributes[0].value.string_value for rm in three.resource_metrics]
    assert hosts == ["host-0", "host-2"]
    assert three.resource_metrics[0] == req.resource_metrics[0]  # whole, byte for byte as parsed
    assert ExportMetricsServiceRequest.FromString(out[1]).resource_metrics[0] == req.resource_metrics[1]
    assert sum(otlp_payloads.item_count(Signal.METRICS, v) for v in out.values()) == \
        otlp_payloads.item_count(Signal.METRICS, data)


def test_unknown_top_level_fields_go_with_the_first_bucket() -> None:
    data = metrics_for([("checkout", "b")]).SerializeToString()
    extra = b"\x12\x03abc"  # field 2, length-delimited: not in OTLP today
    out = buckets(Signal.METRICS, data + extra, 4)
    assert out == {1: extra + data}


@pytest.mark.parametrize("turn", [0, 1, 5, 6, 7])
def test_logs_go_whole_round_robin_by_turn(turn: int) -> None:
    data = otlp_payloads.payload(Signal.LOGS, resources=3)
    assert buckets(Signal.LOGS, data, 6, turn) == {turn % 6: data}
    ExportLogsServiceRequest.FromString(data)


def test_group_resources_refuses_broken_framing() -> None:
    with pytest.raises(wire.WireError):
        buckets(Signal.METRICS, b"\x0a\x05\x0a\x10", 4)


@pytest.mark.parametrize("payload", [
    b"\x0a\x06\x12\x04\x12\x05ab",   # a span's length past the end of its scope
    b"\x0a\x03\x12\x01\x12",         # a span's tag with no length
    b"\x0a\x04\x12\x02\x00\x01",     # field number 0 in the scope
])
def test_group_spans_refuses_broken_framing(payload: bytes) -> None:
    with pytest.raises(wire.WireError):
        buckets(Signal.TRACES, payload, 4)


def test_span_fields_before_the_trace_id_still_find_it() -> None:
    req = traces_with([b"\xff" * 16])
    span = req.resource_spans[0].scope_spans[0].spans[0]
    moved = span.SerializeToString()  # name, ids: re-order so the name comes first
    name = b"\x2a" + bytes([len(span.name)]) + span.name.encode()
    del req.resource_spans[1]
    data = req.SerializeToString().replace(moved, name + moved.replace(name, b""))
    assert name + b"\x0a\x10" + b"\xff" * 16 in data, "the span now starts with its name"
    assert list(buckets(Signal.TRACES, data, 4)) == [2]


def test_a_resource_attribute_written_value_first_is_still_read() -> None:
    data = metrics_for([("checkout", "b")]).SerializeToString()
    kv = KeyValue(key="service.instance.id", value=AnyValue(string_value="b")).SerializeToString()
    value_first = kv[kv.index(b"\x12"):] + kv[:kv.index(b"\x12")]  # field 2 (value) before field 1 (key)
    swapped = data.replace(kv, value_first)
    assert swapped != data
    assert list(buckets(Signal.METRICS, swapped, 4)) == [1]
