"""Pipeline loop logic with an in-memory source and scripted sinks (pure logic, no services).

What matters: offsets are committed only after the sink acknowledged; a transient failure pauses
the source, keeps it alive and retries the same records; a permanent rejection goes to the dead
letter and the pipeline goes on; stop finishes the batch in hand, or leaves it uncommitted when
the sink is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.metrics import ACKED_RECORDS, DEAD_LETTER_RECORDS, ISOLATED_BATCHES, SINK_ERRORS
from pipelines.pipeline import Pipeline
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from tests.waiting import await_for


def rec(offset: int) -> BusRecord:
    return BusRecord(topic="otlp_spans", partition=0, offset=offset, key=b"t", value=b"v%d" % offset,
                     headers={"tenant": "t"}, signal=Signal.TRACES)


class ListSource:
    """Hands out pre-made batches once each; records what was committed and pause calls."""

    def __init__(self, batches: list[list[BusRecord]]) -> None:
        self.batches = list(batches)
        self.committed: list[int] = []
        self.paused = 0
        self.resumed = 0
        self.keepalives = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int) -> Sequence[BusRecord]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return []

    async def commit(self, records: Sequence[BusRecord]) -> None:
        self.committed.extend(r.offset for r in records)

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1

    async def keepalive(self) -> None:
        self.keepalives += 1


class ScriptedSink:
    """Raises the scripted errors in order, then acknowledges."""

    signals = frozenset(Signal)

    def __init__(self, name: str, errors: list[Exception] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.written: list[int] = []
        self.attempts = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(self, records: Sequence[BusRecord]) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.written.extend(r.offset for r in records)


async def run_until(pipeline: Pipeline, done: object, within: float = 5.0) -> None:
    task = asyncio.create_task(pipeline.run())
    try:
        await await_for(lambda: _ready(done), within=within, what="pipeline progress")
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 5.0)


async def _ready(check: object) -> bool:
    return bool(check())  # type: ignore[operator]


async def test_commits_only_what_the_sink_acknowledged() -> None:
    source = ListSource([[rec(0), rec(1)], [rec(2)]])
    sink = ScriptedSink("unit-ack")
    before = ACKED_RECORDS.labels("unit-ack")._value.get()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    await run_until(pipeline, lambda: source.committed == [0, 1, 2])
    assert sink.written == [0, 1, 2]
    assert ACKED_RECORDS.labels("unit-ack")._value.get() - before == 3


async def test_transient_error_pauses_retries_same_records_then_resumes() -> None:
    source = ListSource([[rec(0), rec(1)]])
    sink = ScriptedSink("unit-transient", [TransientSinkError("503"), TransientSinkError("503")])
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff_initial_s=0.01, backoff_max_s=0.02)
    await run_until(pipeline, lambda: source.committed == [0, 1])
    assert sink.attempts == 3 and sink.written == [0, 1]
    assert source.paused >= 1 and source.resumed == 1 and source.keepalives >= 1
    assert SINK_ERRORS.labels("unit-transient", "transient")._value.get() == 2


async def test_permanent_rejection_goes_to_dead_letter_and_pipeline_goes_on() -> None:
    parked: list[Rejection] = []

    async def dead_letter(rejected: Sequence[Rejection]) -> None:
        parked.extend(rejected)

    bad = rec(1)
    source = ListSource([[rec(0), bad, rec(2)], [rec(3)]])
    sink = ScriptedSink("unit-perm", [PermanentSinkError([Rejection(bad, "mapping error")])])
    pipeline = Pipeline(source, sink, dead_letter=dead_letter, poll_timeout_ms=10)
    await run_until(pipeline, lambda: source.committed == [0, 1, 2, 3])
    assert [r.record.offset for r in parked] == [1] and parked[0].reason == "mapping error"
    assert pipeline.dead_lettered == 1 and pipeline.written == 3
    assert DEAD_LETTER_RECORDS.labels("unit-perm")._value.get() == 1


async def test_retry_after_a_partial_transient_failure_sends_only_the_unsettled_records() -> None:
    parked: list[Rejection] = []

    async def dead_letter(rejected: Sequence[Rejection]) -> None:
        parked.extend(rejected)

    r0, bad, r2 = rec(0), rec(1), rec(2)
    half_way = TransientSinkError("503 on one chunk", written=[r0], rejected=[Rejection(bad, "mapping")])
    source = ListSource([[r0, bad, r2]])
    sink = ScriptedSink("unit-partial", [half_way])
    pipeline = Pipeline(source, sink, dead_letter=dead_letter, poll_timeout_ms=10, backoff_initial_s=0.01)
    await run_until(pipeline, lambda: source.committed == [0, 1, 2])
    assert sink.attempts == 2 and sink.written == [2]  # r0 is not written twice
    assert [r.record.offset for r in parked] == [1]
    assert pipeline.written == 2 and pipeline.dead_lettered == 1
    assert ACKED_RECORDS.labels("unit-partial")._value.get() == 2


async def test_dead_letter_failure_is_retried_before_commit() -> None:
    calls = 0

    async def flaky_dead_letter(rejected: Sequence[Rejection]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientSinkError("dead-letter topic not reachable")

    bad = rec(0)
    source = ListSource([[bad]])
    sink = ScriptedSink("unit-dlq-retry", [PermanentSinkError([Rejection(bad, "poison")])])
    pipeline = Pipeline(source, sink, dead_letter=flaky_dead_letter, poll_timeout_ms=10,
                        backoff_initial_s=0.01)
    await run_until(pipeline, lambda: source.committed == [0])
    assert calls == 2


async def test_stop_while_sink_is_down_leaves_batch_uncommitted() -> None:
    source = ListSource([[rec(0)]])
    sink = ScriptedSink("unit-down", [TransientSinkError("down")] * 1000)
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff_initial_s=0.05, backoff_max_s=0.05)
    task = asyncio.create_task(pipeline.run())
    await await_for(lambda: _ready(lambda: sink.attempts >= 2), what="a retry")
    pipeline.stop()
    await asyncio.wait_for(task, 2.0)
    assert source.committed == []
    assert source.resumed == 1


class GatedSink(ScriptedSink):
    """Writes only once ``gate`` is set."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = asyncio.Event()

    async def write(self, records: Sequence[BusRecord]) -> None:
        await self.gate.wait()
        await super().write(records)


async def test_stop_finishes_the_batch_in_hand() -> None:
    source = ListSource([[rec(0), rec(1)]])
    sink = GatedSink("unit-slow")
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    task = asyncio.create_task(pipeline.run())
    await await_for(lambda: _ready(lambda: not source.batches), what="batch taken")
    pipeline.stop()
    sink.gate.set()
    await asyncio.wait_for(task, 2.0)
    assert source.committed == [0, 1]


async def test_unexpected_sink_error_is_retried_not_fatal() -> None:
    source = ListSource([[rec(0)]])
    sink = ScriptedSink("unit-bug", [KeyError("a sink bug")])
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff_initial_s=0.01)
    await run_until(pipeline, lambda: source.committed == [0])
    assert sink.attempts == 2
    assert SINK_ERRORS.labels("unit-bug", "unexpected")._value.get() == 1


class PoisonSink(ScriptedSink):
    """Fails every write that holds a poisoned record with an error of no known kind, writing
    nothing then (the contract for such errors); writes anything else."""

    def __init__(self, name: str, poisoned: set[int]) -> None:
        super().__init__(name)
        self.poisoned = poisoned
        self.batches: list[list[int]] = []

    async def write(self, records: Sequence[BusRecord]) -> None:
        self.attempts += 1
        self.batches.append([r.offset for r in records])
        if any(r.offset in self.poisoned for r in records):
            raise RecursionError("maximum recursion depth exceeded")
        self.written.extend(r.offset for r in records)


async def test_a_record_that_always_fails_unexpectedly_is_isolated_and_dead_lettered() -> None:
    parked: list[Rejection] = []

    async def dead_letter(rejected: Sequence[Rejection]) -> None:
        parked.extend(rejected)

    source = ListSource([[rec(0), rec(1), rec(2)], [rec(3)]])
    sink = PoisonSink("unit-poison", {1})
    pipeline = Pipeline(source, sink, dead_letter=dead_letter, poll_timeout_ms=10,
                        backoff_initial_s=0.01, backoff_max_s=0.02, max_unexpected_retries=2)
    await run_until(pipeline, lambda: source.committed == [0, 1, 2, 3])
    assert sorted(sink.written) == [0, 2, 3]  # each good record exactly once
    assert sink.batches[:3] == [[0, 1, 2]] * 3  # the batch: 1 + 2 retries, then one at a time
    assert sink.batches.count([1]) == 3
    assert [r.record.offset for r in parked] == [1]
    assert "RecursionError" in parked[0].reason and "3 attempts" in parked[0].reason
    assert pipeline.written == 3 and pipeline.dead_lettered == 1
    assert SINK_ERRORS.labels("unit-poison", "unexpected")._value.get() == 6
    assert SINK_ERRORS.labels("unit-poison", "gave_up")._value.get() == 1
    assert ISOLATED_BATCHES.labels("unit-poison")._value.get() == 1


async def test_a_lone_poisoned_record_is_dead_lettered_after_its_retries() -> None:
    source = ListSource([[rec(0)], [rec(1)]])
    sink = PoisonSink("unit-lone-poison", {0})
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff_initial_s=0.01, max_unexpected_retries=1)
    await run_until(pipeline, lambda: source.committed == [0, 1])
    assert sink.batches == [[0], [0], [1]] and sink.written == [1]
    assert pipeline.dead_lettered == 1


async def test_a_dead_letter_that_parked_some_before_failing_is_not_asked_to_park_them_again() -> None:
    parked: list[int] = []
    calls = 0

    async def half_way(rejected: Sequence[Rejection]) -> None:
        nonlocal calls
        calls += 1
        parked.append(rejected[0].record.offset)
        if calls == 1 and len(rejected) > 1:
            raise TransientSinkError("rejects disk full", written=[rejected[0].record])
        parked.extend(r.record.offset for r in rejected[1:])

    a, b = rec(0), rec(1)
    source = ListSource([[a, b]])
    sink = ScriptedSink("unit-dlq-partial", [PermanentSinkError([Rejection(a, "x"), Rejection(b, "y")])])
    pipeline = Pipeline(source, sink, dead_letter=half_way, poll_timeout_ms=10, backoff_initial_s=0.01)
    await run_until(pipeline, lambda: source.committed == [0, 1])
    assert parked == [0, 1] and pipeline.dead_lettered == 2
