"""Jaeger sink against a real Jaeger: a multi-span trace comes back whole, tenant on the process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp.signals import Signal
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.jaeger import JaegerSink
from tests import stackenv
from tests.bad_otlp import with_invalid_utf8, with_malformed_varint
from tests.integration.sink_checks import assert_write_is_transient, jaeger_trace
from tests.sdk_otlp import bus_record, spans_payload

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink() -> AsyncIterator[JaegerSink]:
    stackenv.require("jaeger", "jaeger-query")
    s = JaegerSink(stackenv.JAEGER_OTLP_GRPC)
    await s.start()
    yield s
    await s.stop()


def process_tags(tr: dict[str, Any]) -> list[dict[str, str]]:
    return [{t["key"]: t["value"] for t in p["tags"]} | {"service": p["serviceName"]}
            for p in tr["processes"].values()]


async def test_multi_span_trace_is_returned_whole_with_the_tenant(sink: JaegerSink) -> None:
    tenant = f"it-{uuid.uuid4().hex[:8]}"
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    a, a_ids = spans_payload(tenant, traces=2, children=3, service=service)
    b, b_ids = spans_payload(tenant, traces=1, children=1, service=service)
    # Two records joined into one Export call.
    await sink.write([bus_record(Signal.TRACES, a, tenant, offset=1),
                      bus_record(Signal.TRACES, b, tenant, offset=2)])
    for trace_id, n in [(a_ids[0], 4), (a_ids[1], 4), (b_ids[0], 2)]:
        tr = await jaeger_trace(trace_id, n)
        assert len(tr["spans"]) == n
        assert {s["traceID"] for s in tr["spans"]} == {trace_id}
        names = sorted(s["operationName"] for s in tr["spans"])
        assert names[0] == "GET /cart"
        root = next(s for s in tr["spans"] if s["operationName"] == "GET /cart")
        children = [s for s in tr["spans"] if s is not root]
        assert all(any(r["spanID"] == root["spanID"] for r in c["references"]) for c in children)
        (tags,) = process_tags(tr)
        assert tags["tenant.id"] == tenant and tags["service"] == service
        assert tags["correlation.id"]


async def test_garbage_is_rejected_for_good(sink: JaegerSink) -> None:
    good, ids = spans_payload("acme", traces=1, children=1, service=f"svc-{uuid.uuid4().hex[:6]}")
    bad = bus_record(Signal.TRACES, b"\x0a\xff\xff\xff\xff\x0f garbage", "acme", offset=2)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([bus_record(Signal.TRACES, good, "acme", offset=1), bad])
    assert [r.record.offset for r in err.value.rejected] == [2]
    await jaeger_trace(ids[0], 2)  # the good record still went through


async def test_unreachable_jaeger_is_transient() -> None:
    payload, _ = spans_payload("acme", traces=1, children=0)
    await assert_write_is_transient(JaegerSink("127.0.0.1:1", timeout_s=2),
                                    [bus_record(Signal.TRACES, payload, "acme", offset=1)])


async def _spans_once(trace_id: str, names: list[str]) -> None:
    """The trace holds exactly the spans ``names``, each once, also a little later."""
    def got(tr: dict[str, Any]) -> list[str]:
        return sorted(s["operationName"] for s in tr["spans"])
    await jaeger_trace(trace_id, len(names))
    await asyncio.sleep(1)  # time for a second copy, were one sent, to show up
    assert got(await jaeger_trace(trace_id, len(names))) == sorted(names)


def _two_traces(tenant: str, service: str) -> tuple[bytes, str, ExportTraceServiceRequest]:
    good, (good_trace,) = spans_payload(tenant, traces=1, children=1, service=service)
    other = ExportTraceServiceRequest.FromString(
        spans_payload(tenant, traces=1, children=2, service=service)[0])  # 3 spans, one trace
    return good, good_trace, other


async def test_a_span_that_does_not_decode_is_rejected_alone_and_the_rest_lands_once(
        sink: JaegerSink) -> None:
    """One record: a good request and one whose span holds a malformed varint (batched by the
    gateway into one Kafka record). Jaeger refuses the record; its other spans land once."""
    tenant, service = f"it-{uuid.uuid4().hex[:8]}", f"parts-{uuid.uuid4().hex[:6]}"
    good, good_trace, req = _two_traces(tenant, service)
    spans = req.resource_spans[0].scope_spans[0].spans
    bad_trace = spans[0].trace_id.hex()
    kept = [sp.name for sp in spans[1:]]
    bad = with_malformed_varint(req, lambda m: setattr(spans[0], "name", m))
    record = bus_record(Signal.TRACES, good + bad, tenant, offset=3)
    other, (other_trace,) = spans_payload(tenant, traces=1, children=0, service=service)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([record, bus_record(Signal.TRACES, other, tenant, offset=4)])
    (rej,) = err.value.rejected
    assert rej.record is record and rej.part is not None and "malformed OTLP" in rej.reason
    assert len(rej.value) < len(bad)  # only the bad part is dead-lettered
    await _spans_once(good_trace, ["GET /cart", "SELECT cart 0"])
    await _spans_once(bad_trace, kept)
    await _spans_once(other_trace, ["GET /cart"])


async def test_a_span_only_jaeger_refuses_is_found_by_halves_and_rejected_alone(sink: JaegerSink) -> None:
    """A 15-byte trace id decodes as protobuf, but Jaeger refuses the call: the sink sends the
    record by halves, never sending a part twice, and rejects just that span."""
    tenant, service = f"it-{uuid.uuid4().hex[:8]}", f"parts-{uuid.uuid4().hex[:6]}"
    good, good_trace, req = _two_traces(tenant, service)
    spans = req.resource_spans[0].scope_spans[0].spans
    kept_trace, kept = spans[0].trace_id.hex(), sorted(sp.name for sp in spans[1:])
    spans[0].trace_id = b"\x01" * 15
    record = bus_record(Signal.TRACES, good + req.SerializeToString(), tenant, offset=5)
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([record])
    (rej,) = err.value.rejected
    assert rej.reason == "jaeger: INVALID_ARGUMENT" and rej.record is record and rej.part is not None
    (alone,) = ExportTraceServiceRequest.FromString(rej.value).resource_spans
    assert [sp.trace_id for sp in alone.scope_spans[0].spans] == [b"\x01" * 15]
    await _spans_once(good_trace, ["GET /cart", "SELECT cart 0"])
    await _spans_once(kept_trace, kept)


async def test_a_span_name_that_is_not_utf8_is_kept_by_jaeger_under_a_marked_name(sink: JaegerSink) -> None:
    """What the sink's docstring says Jaeger does with it (so the sink does not reject it)."""
    tenant, service = f"it-{uuid.uuid4().hex[:8]}", f"parts-{uuid.uuid4().hex[:6]}"
    _, _, req = _two_traces(tenant, service)
    spans = req.resource_spans[0].scope_spans[0].spans
    trace_id, kept = spans[0].trace_id.hex(), [sp.name for sp in spans[1:]]
    bad = with_invalid_utf8(req, lambda m: setattr(spans[0], "name", m))
    await sink.write([bus_record(Signal.TRACES, bad, tenant, offset=6)])  # no rejection
    await _spans_once(trace_id, [*kept, "invalid-span-name"])
