"""File sink: one OTLP/JSON line per record, per tenant and signal, tenants kept in their dirs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.bus.base import BusRecord
from gateway.signals import HEADER_TENANT, Signal
from pipelines.sinks.file import REJECTED_PARTS, FileSink, safe_name


def record(tenant: str, value: bytes, offset: int, signal: Signal = Signal.TRACES) -> BusRecord:
    return BusRecord(signal.topic(), 0, offset, None, value, {HEADER_TENANT: tenant}, signal)


def spans(name: str) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    scope.spans.add(name=name, trace_id=b"\xab" * 16, span_id=b"\xcd" * 8)
    return req.SerializeToString()


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_lines_per_tenant_and_signal(tmp_path: Path, offload: bool) -> None:
    sink = FileSink(tmp_path, suffix="-w1", offload=offload)
    await sink.start()
    await sink.write([record("acme", spans("a"), 0), record("beta", spans("b"), 1),
                      record("acme", spans("c"), 2)])
    # written and flushed before write returned: readable now, while the files are still open
    acme = [json.loads(x) for x in (tmp_path / "acme" / "traces-w1.jsonl").read_text().splitlines()]
    assert [d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for d in acme] == ["a", "c"]
    assert acme[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == "ab" * 16
    assert (tmp_path / "beta" / "traces-w1.jsonl").read_text().count("\n") == 1
    await sink.stop()


def rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_malformed_record_is_kept_as_a_reject_rest_written(tmp_path: Path, offload: bool) -> None:
    sink = FileSink(tmp_path, offload=offload)
    await sink.start()
    await sink.write([record("acme", b"\x0a\xff\xff", 0), record("acme", spans("ok"), 1)])
    await sink.stop()
    assert (tmp_path / "acme" / "traces.jsonl").read_text().count("\n") == 1
    [reject] = rejects(tmp_path / "acme" / "rejected" / "traces.jsonl")
    assert (reject["topic"], reject["partition"], reject["offset"]) == (Signal.TRACES.topic(), 0, 0)
    assert base64.b64decode(reject["payload"]) == b"\x0a\xff\xff"


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_one_bad_string_does_not_cost_the_requests_batched_with_it(tmp_path: Path,
                                                                          offload: bool) -> None:
    """Ingest checks only the framing, so a span name that is not UTF-8 is acknowledged and
    batched with other requests of the tenant into one record; the others must still be written."""
    bad = spans("bad!").replace(b"bad!", b"ba\xff!")  # same length: the framing stays valid
    before = REJECTED_PARTS.labels("traces")._value.get()
    sink = FileSink(tmp_path, offload=offload)
    await sink.start()
    await sink.write([record("acme", spans("a") + bad + spans("b"), 7)])
    await sink.stop()
    [line] = [json.loads(x) for x in (tmp_path / "acme" / "traces.jsonl").read_text().splitlines()]
    assert [rs["scopeSpans"][0]["spans"][0]["name"] for rs in line["resourceSpans"]] == ["a", "b"]
    [reject] = rejects(tmp_path / "acme" / "rejected" / "traces.jsonl")
    assert reject["offset"] == 7 and reject["error"]
    assert base64.b64decode(reject["payload"]) == bad  # one ResourceX: a request of its own
    assert REJECTED_PARTS.labels("traces")._value.get() == before + 1


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_only_the_process_that_writes_has_a_writer(tmp_path: Path, offload: bool) -> None:
    sink = FileSink(tmp_path, offload=offload)
    assert (sink._writer is None) == offload
    await sink.start()
    await sink.write([record("acme", spans("a"), 0)])
    await sink.stop()
    assert sink.path("acme", Signal.TRACES).read_text().count("\n") == 1


@pytest.mark.parametrize(("tenant", "name"), [("acme", "acme"), ("../etc", "_.._etc"), ("", "_"),
                                               ("a/b", "a_b"), (".hidden", "_.hidden")])
def test_tenant_dir_cannot_escape(tenant: str, name: str) -> None:
    assert safe_name(tenant) == name


async def test_embedded_pipeline_keeps_up_with_a_full_memory_bus(tmp_path: Path) -> None:
    """A publisher waiting on a full memory bus must wake when the sink commits, not time out."""
    import asyncio

    from gateway.bus.base import Batch
    from gateway.bus.memory import MemoryBus
    from pipelines.pipeline import Pipeline

    bus = MemoryBus(max_records=2, full_wait_s=30.0)
    sink = FileSink(tmp_path)
    await sink.start()
    pipeline = Pipeline(bus.source(), sink, max_records=1)
    task = asyncio.create_task(pipeline.run())
    # All at once: most publishers find the log full and must be woken by the sink's commits.
    batches = [Batch(Signal.TRACES, "acme", spans(f"s{i}"), 1, [f"c{i}"]) for i in range(20)]
    publishers = [asyncio.create_task(bus.publish(b)) for b in batches]
    try:
        done, _pending = await asyncio.wait(publishers, timeout=5)
        assert len(done) == 20, f"{20 - len(done)} publishers still waiting for room"
        await _until(lambda: pipeline.written == 20)
    finally:
        for p in publishers:
            p.cancel()
        pipeline.stop()
        await asyncio.wait((task,), timeout=5)
        await sink.stop()
    assert (tmp_path / "acme" / "traces.jsonl").read_text().count("\n") == 20


async def _until(check: Callable[[], bool]) -> None:
    from tests.waiting import await_for

    async def ok() -> bool:
        return check()

    await await_for(ok, within=5, what="the pipeline to write everything")
