"""File sink: one OTLP/JSON line per record, per tenant and signal, tenants kept in their dirs."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import BusRecord
from otlp.signals import HEADER_TENANT, Signal
from otlp.wire import encode_varint
from pipelines.metrics import FILE_REJECTED_PARTS as REJECTED_PARTS
from pipelines.sinks.base import Rejection, TransientSinkError
from pipelines.sinks.file import FileSink, complete_lines, safe_name, tenant_of


def record(tenant: str, value: bytes, offset: int, signal: Signal = Signal.TRACES) -> BusRecord:
    return BusRecord(signal.topic(), 0, offset, None, value, {HEADER_TENANT: tenant}, signal)


def spans(name: str) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    scope.spans.add(name=name, trace_id=b"\xab" * 16, span_id=b"\xcd" * 8)
    return req.SerializeToString()


def spans_for_the_helper(name: str) -> bytes:
    """A one-span request whose span sets its name twice: valid protobuf (the last one wins), which
    the C writer leaves to the reference converter in the helper."""
    span = (b"\x0a\x10" + b"\xab" * 16 + b"\x12\x08" + b"\xcd" * 8
            + 2 * (b"\x2a" + encode_varint(len(name.encode())) + name.encode()))
    scope = b"\x12" + encode_varint(len(span)) + span  # ScopeSpans.spans
    rs = b"\x12" + encode_varint(len(scope)) + scope  # ResourceSpans.scope_spans
    return b"\x0a" + encode_varint(len(rs)) + rs



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


async def test_a_killed_helper_is_replaced_and_nothing_is_written_twice(tmp_path: Path) -> None:
    """The helper only converts, so losing it costs no line and duplicates none."""
    sink = FileSink(tmp_path, offload=True)
    await sink.start()
    try:
        assert sink.helper_pid is None  # started for the first record the C writer leaves
        await sink.write([record("acme", spans_for_the_helper("a"), 0)])
        first = sink.helper_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await sink.write([record("acme", spans("b"), 1), record("acme", spans_for_the_helper("c"), 2)])
        assert sink.helper_pid not in (None, first)
    finally:
        await sink.stop()
    assert names(tmp_path / "acme" / "traces.jsonl") == ["a", "b", "c"]


def dir_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def names(path: Path) -> list[str]:
    return [rs["scopeSpans"][0]["spans"][0]["name"]
            for line in path.read_text().splitlines() for rs in json.loads(line)["resourceSpans"]]


def deep_resource_spans(depth: int) -> bytes:
    """A ResourceSpans (as a one-part traces request) whose resource attribute is an AnyValue
    nested ``depth`` arrays deep: well framed, yet the converter fails on it with an error that
    is not a WireError."""
    value = b"\x0a\x01x"  # AnyValue{string_value: "x"}
    for _ in range(depth):
        array = b"\x0a" + encode_varint(len(value)) + value  # ArrayValue{values: [value]}
        value = b"\x2a" + encode_varint(len(array)) + array  # AnyValue{array_value: array}
    kv = b"\x0a\x01k\x12" + encode_varint(len(value)) + value
    resource = b"\x0a" + encode_varint(len(kv)) + kv
    rs = b"\x0a" + encode_varint(len(resource)) + resource
    return b"\x0a" + encode_varint(len(rs)) + rs


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_any_converter_failure_sets_only_that_part_aside(tmp_path: Path, offload: bool) -> None:
    bad = deep_resource_spans(100)
    sink = FileSink(tmp_path, offload=offload)
    await sink.start()
    try:
        await sink.write([record("acme", bad + spans("good"), 3)])
    finally:
        await sink.stop()
    assert names(tmp_path / "acme" / "traces.jsonl") == ["good"]
    [reject] = rejects(tmp_path / "acme" / "rejected" / "traces.jsonl")
    assert reject["offset"] == 3 and reject["error"]
    assert base64.b64decode(reject["payload"]) == bad


async def test_an_io_error_mid_batch_names_what_was_written_and_a_retry_appends_only_the_rest(
        tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the tenant's directory should be")
    sink = FileSink(tmp_path)
    await sink.start()
    batch = [record("acme", spans("a"), 0), record("blocked", spans("b"), 1), record("acme", spans("c"), 2)]
    try:
        with pytest.raises(TransientSinkError) as raised:
            await sink.write(batch)
        assert raised.value.written == batch[:1]
        (tmp_path / "blocked").unlink()  # the store is back
        await sink.write(batch[1:])
    finally:
        await sink.stop()
    assert names(tmp_path / "acme" / "traces.jsonl") == ["a", "c"]
    assert names(tmp_path / "blocked" / "traces.jsonl") == ["b"]


async def test_parked_records_go_to_the_rejects_file_with_the_reason(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        await sink.park([Rejection(record("acme", b"poison", 9), "unexpected sink error: KeyError")])
    finally:
        await sink.stop()
    [reject] = rejects(tmp_path / "acme" / "rejected" / "traces.jsonl")
    assert (reject["offset"], reject["error"]) == (9, "unexpected sink error: KeyError")
    assert base64.b64decode(reject["payload"]) == b"poison"


@pytest.mark.parametrize(("tenant", "name"), [("acme", "acme"), ("../etc", "%2E.%2Fetc"), ("", "%"),
                                               ("a/b", "a%2Fb"), (".hidden", "%2Ehidden"),
                                               ("Acme", "%41cme"), ("..", "%2E."), ("%41", "%2541")])
def test_tenant_dir_cannot_escape(tenant: str, name: str) -> None:
    assert safe_name(tenant) == name
    assert tenant_of(name) == tenant


TRICKY_TENANTS = [".x", "_.x", "%2Ex", "a/b", "a_b", "a%2Fb", "A", "a", "%41", "..", ".", "", "%", "_",
                  "a\\b", "é", "%C3%A9", "\udcff", " ", "a.", "a..b", "-", "con", "CON"]


def test_distinct_tenants_get_distinct_directories_even_ignoring_case() -> None:
    names_ = [safe_name(t) for t in TRICKY_TENANTS]
    assert len({n.lower() for n in names_}) == len(TRICKY_TENANTS)  # case-insensitive filesystems too
    for n in names_:
        assert n not in ("", ".", "..") and "/" not in n and "\\" not in n and not n.startswith(".")
    assert [tenant_of(n) for n in names_] == TRICKY_TENANTS


async def test_tricky_tenants_land_in_their_own_directories(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        await sink.write([record(t, spans(f"span-{i}"), i) for i, t in enumerate(TRICKY_TENANTS)])
    finally:
        await sink.stop()
    assert dir_names(tmp_path) == sorted(safe_name(t) for t in TRICKY_TENANTS)
    for i, t in enumerate(TRICKY_TENANTS):
        assert names(sink.path(t, Signal.TRACES)) == [f"span-{i}"]


async def test_embedded_pipeline_keeps_up_with_a_full_memory_bus(tmp_path: Path) -> None:
    """A publisher waiting on a full memory bus must wake when the sink commits, not time out."""
    import asyncio

    from bus.contract import Batch
    from bus.memory import MemoryBus
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


def test_complete_lines_reads_once_and_leaves_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert list(complete_lines(path)) == [b'{"a":1}\n', b'{"b":2}\n']
    path.write_bytes(b'{"c":')
    assert list(complete_lines(path)) == []
