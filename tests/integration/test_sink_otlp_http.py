"""The OTLP/HTTP forwarding sink against real OTLP/HTTP receivers: SDK spans into Jaeger (read
back from its query API) and SDK logs into VictoriaLogs (read back per tenant with LogsQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp.signals import Signal
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.otlp_http import OtlpHttpSink, make_sink
from settings.config import Config
from tests import stackenv
from tests.bad_otlp import with_malformed_varint
from tests.integration.sink_checks import assert_write_is_transient, jaeger_trace
from tests.sdk_otlp import bus_record, logs_payload, spans_payload
from tests.waiting import await_for

pytestmark = pytest.mark.integration

VL_LOGS = f"{stackenv.VICTORIALOGS_URL}/insert/opentelemetry/v1/logs"


@pytest.fixture
async def jaeger_sink() -> AsyncIterator[OtlpHttpSink]:
    stackenv.require("jaeger", "jaeger-query")
    s = OtlpHttpSink(f"http://{stackenv.JAEGER_OTLP_HTTP}", signals=frozenset({Signal.TRACES}))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def vl_sink() -> AsyncIterator[OtlpHttpSink]:
    stackenv.require("victorialogs")
    cfg = Config()
    cfg.pipelines.otlp_http.urls = {"logs": VL_LOGS}
    cfg.pipelines.otlp_http.signals = "logs"
    s = make_sink(cfg)  # what `--sink otlp_http` builds

    assert isinstance(s, OtlpHttpSink) and s.gzip
    await s.start()
    yield s
    await s.stop()


async def _logs(tenant: str) -> list[dict[str, Any]]:
    """Every log of ``tenant`` in VictoriaLogs, after a flush (so what was sent is all visible)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stackenv.VICTORIALOGS_URL}/internal/force_flush") as resp:
            assert resp.status == 200
        async with http.post(f"{stackenv.VICTORIALOGS_URL}/select/logsql/query",
                             data={"query": f'"tenant.id":"{tenant}"'}) as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def _logs_count(tenant: str, n: int) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        got = await _logs(tenant)
        return got if len(got) >= n else None
    return await await_for(check, within=20, interval=0.2, what=f"{n} logs of {tenant} in VictoriaLogs")


async def test_sdk_spans_reach_jaeger_over_otlp_http(jaeger_sink: OtlpHttpSink) -> None:
    tenant, service = f"it-{uuid.uuid4().hex[:8]}", f"http-{uuid.uuid4().hex[:6]}"
    a, a_ids = spans_payload(tenant, traces=2, children=2, service=service)
    b, b_ids = spans_payload(tenant, traces=1, children=0, service=service)
    await jaeger_sink.write([bus_record(Signal.TRACES, a, tenant, offset=1),
                             bus_record(Signal.TRACES, b, tenant, offset=2)])
    for trace_id, n in [(a_ids[0], 3), (a_ids[1], 3), (b_ids[0], 1)]:
        tr = await jaeger_trace(trace_id, n)
        assert len(tr["spans"]) == n and {s["traceID"] for s in tr["spans"]} == {trace_id}
        (proc,) = tr["processes"].values()
        tags = {t["key"]: t["value"] for t in proc["tags"]}
        assert proc["serviceName"] == service and tags["tenant.id"] == tenant


async def test_sdk_logs_reach_victorialogs_per_tenant(vl_sink: OtlpHttpSink) -> None:
    acme, globex = f"it-acme-{uuid.uuid4().hex[:8]}", f"it-globex-{uuid.uuid4().hex[:8]}"
    await vl_sink.write([bus_record(Signal.LOGS, logs_payload(acme, n=3), acme, offset=1),
                         bus_record(Signal.LOGS, logs_payload(globex, n=2), globex, offset=2)])
    got_acme = await _logs_count(acme, 4)
    got_globex = await _logs_count(globex, 3)
    # logs_payload(n) is n string bodies ("order <i> placed") and one map body (order.id n)
    assert sorted(r["order.id"] for r in got_acme) == ["0", "1", "2", "3"]
    assert sorted(r["order.id"] for r in got_globex) == ["0", "1", "2"]
    assert "order 1 placed" in {r["_msg"] for r in got_acme}
    assert {r["tenant.id"] for r in got_acme} == {acme} and {r["tenant.id"] for r in got_globex} == {globex}
    assert all(f'tenant.id="{acme}"' in r["_stream"] for r in got_acme)  # a stream field


async def test_a_bad_log_beside_good_ones_is_dead_lettered_alone_and_the_rest_lands_once(
        vl_sink: OtlpHttpSink) -> None:
    """One record (as the gateway batches them): a good request, and one whose second log
    record holds a malformed varint. VictoriaLogs refuses the whole; the sink sends the rest
    once and rejects only the bad log record, with its resource and scope."""
    tenant = f"it-parts-{uuid.uuid4().hex[:8]}"
    good = logs_payload(tenant, n=2)
    req = ExportLogsServiceRequest.FromString(logs_payload(tenant, n=3))
    records = req.resource_logs[0].scope_logs[0].log_records
    bad = with_malformed_varint(req, lambda m: records[1].body.__setattr__("string_value", m))
    record = bus_record(Signal.LOGS, good + bad, tenant, offset=3)
    other = bus_record(Signal.LOGS, logs_payload(tenant, n=1), tenant, offset=4)
    with pytest.raises(PermanentSinkError) as err:
        await vl_sink.write([record, other])
    (rej,) = err.value.rejected
    assert rej.record is record and rej.part is not None and "malformed OTLP" in rej.reason
    assert len(rej.value) < len(bad) and b"order 1 placed" not in rej.value  # the bad one alone
    # good: order.id 0, 1, 2 (map body); bad: 0, 2, 3 kept (1 refused); other: 0, 1. Each once.
    got = await _logs_count(tenant, 3 + 3 + 2)
    assert sorted(r["order.id"] for r in got) == ["0", "0", "0", "1", "1", "2", "2", "3"]


async def test_unreachable_receiver_is_transient() -> None:
    await assert_write_is_transient(
        OtlpHttpSink("http://127.0.0.1:1", signals=frozenset({Signal.LOGS}), timeout_s=2),
        [bus_record(Signal.LOGS, logs_payload("acme", n=1), "acme", offset=1)])
