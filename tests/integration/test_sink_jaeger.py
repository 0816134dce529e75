"""Jaeger sink against a real Jaeger: a multi-span trace comes back whole, tenant on the process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.signals import Signal
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.jaeger import JaegerSink
from tests import stackenv
from tests.integration.sink_checks import assert_write_is_transient
from tests.sdk_otlp import bus_record, spans_payload
from tests.waiting import await_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink() -> AsyncIterator[JaegerSink]:
    stackenv.require("jaeger", "jaeger-query")
    s = JaegerSink(stackenv.JAEGER_OTLP_GRPC)
    await s.start()
    yield s
    await s.stop()


async def trace(trace_id: str, spans: int) -> dict[str, Any]:
    """The trace from Jaeger's query API once it holds ``spans`` spans."""
    async def check() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as http, \
                http.get(f"{stackenv.JAEGER_QUERY_URL}/api/traces/{trace_id}") as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
        data = body.get("data") or []
        return data[0] if data and len(data[0]["spans"]) >= spans else None
    return await await_for(check, within=20, interval=0.2, what=f"trace {trace_id} with {spans} spans")


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
        tr = await trace(trace_id, n)
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
    await trace(ids[0], 2)  # the good record still went through


async def test_unreachable_jaeger_is_transient() -> None:
    payload, _ = spans_payload("acme", traces=1, children=0)
    await assert_write_is_transient(JaegerSink("127.0.0.1:1", timeout_s=2),
                                    [bus_record(Signal.TRACES, payload, "acme", offset=1)])
