"""File sink: one OTLP/JSON line per record, per tenant and signal, tenants kept in their dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.bus.base import BusRecord
from gateway.signals import HEADER_TENANT, Signal
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.file import FileSink, safe_name


def record(tenant: str, value: bytes, offset: int, signal: Signal = Signal.TRACES) -> BusRecord:
    return BusRecord(signal.topic(), 0, offset, None, value, {HEADER_TENANT: tenant}, signal)


def spans(name: str) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    scope.spans.add(name=name, trace_id=b"\xab" * 16, span_id=b"\xcd" * 8)
    return req.SerializeToString()


async def test_lines_per_tenant_and_signal(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, suffix="-w1")
    await sink.start()
    await sink.write([record("acme", spans("a"), 0), record("beta", spans("b"), 1),
                      record("acme", spans("c"), 2)])
    # written and flushed before write returned: readable now, while the files are still open
    acme = [json.loads(x) for x in (tmp_path / "acme" / "traces-w1.jsonl").read_text().splitlines()]
    assert [d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for d in acme] == ["a", "c"]
    assert acme[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == "ab" * 16
    assert (tmp_path / "beta" / "traces-w1.jsonl").read_text().count("\n") == 1
    await sink.stop()


async def test_malformed_record_is_rejected_rest_written(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    with pytest.raises(PermanentSinkError) as err:
        await sink.write([record("acme", b"\x0a\xff\xff", 0), record("acme", spans("ok"), 1)])
    assert [r.record.offset for r in err.value.rejected] == [0]
    assert (tmp_path / "acme" / "traces.jsonl").read_text().count("\n") == 1
    await sink.stop()


@pytest.mark.parametrize(("tenant", "name"), [("acme", "acme"), ("../etc", "_.._etc"), ("", "_"),
                                               ("a/b", "a_b"), (".hidden", "_.hidden")])
def test_tenant_dir_cannot_escape(tenant: str, name: str) -> None:
    assert safe_name(tenant) == name
