"""The pipeline's read-ahead (pure logic, no services): while the sink writes batch N, batch N+1
is polled and prepared; writes stay one at a time and in order, offsets are committed in order and
only after the write, each record is written once, and a stop leaves the batch held ahead
uncommitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.pipeline import Pipeline
from pipelines.sinks.base import PreparingSink, TransientSinkError
from tests.unit.test_pipeline import GatedSink, ListSource, rec, run_until
from tests.waiting import await_for


@dataclass
class Prepared:
    offsets: list[int]


class SlowPreparingSink:
    """Splits its write into ``prepare`` and ``send``; each ``send`` waits until released.

    ``events`` is the order of what happened: ``prepare <first offset>`` when a preparation
    ends, ``send <first offset>`` when a send starts, ``sent <first offset>`` when it ends.
    """

    name = "unit-overlap"
    signals = frozenset(Signal)

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.events: list[str] = []
        self.written: list[int] = []
        self.errors = list(errors or [])
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def prepare(self, records: Sequence[BusRecord]) -> Prepared:
        await asyncio.sleep(0)
        self.events.append(f"prepare {records[0].offset}")
        return Prepared([r.offset for r in records])

    async def send(self, prepared: Prepared) -> None:
        self.events.append(f"send {prepared.offsets[0]}")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.errors:
                raise self.errors.pop(0)
            self.written.extend(prepared.offsets)
        finally:
            self.in_flight -= 1
        self.events.append(f"sent {prepared.offsets[0]}")

    async def write(self, records: Sequence[BusRecord]) -> None:
        self.events.append(f"write {records[0].offset}")
        await self.send(await self.prepare(records))


async def _true(check: object) -> bool:
    return bool(check())  # type: ignore[operator]


async def test_the_next_batch_is_prepared_while_the_current_one_is_written() -> None:
    source = ListSource([[rec(0), rec(1)], [rec(2), rec(3)], [rec(4)]])
    sink = SlowPreparingSink()
    assert isinstance(sink, PreparingSink)
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    task = asyncio.create_task(pipeline.run())
    try:
        # The first send waits; meanwhile the second batch is polled and prepared.
        await await_for(lambda: _true(lambda: {"send 0", "prepare 2"} <= set(sink.events)), within=5,
                        what="batch 0 sent and batch 2 prepared")
        assert "sent 0" not in sink.events  # batch 2 was converted while batch 0 was being written
        assert source.committed == []  # nothing committed before its write returned
        assert source.batches == [[rec(4)]]  # bounded: one batch ahead, not two
        sink.release.set()
        await await_for(lambda: _true(lambda: source.committed == [0, 1, 2, 3, 4]), within=5, what="commits")
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 5.0)
    assert sink.written == [0, 1, 2, 3, 4]  # each record once, in order
    assert sink.most_in_flight == 1  # writes one at a time
    assert sink.events.index("sent 0") < sink.events.index("send 2") < sink.events.index("sent 2")
    assert not any(e.startswith("write") for e in sink.events)  # the prepared values were sent


async def test_a_retried_write_keeps_commits_in_order_and_writes_each_record_once() -> None:
    source = ListSource([[rec(0), rec(1)], [rec(2)]])
    sink = SlowPreparingSink([TransientSinkError("503")])
    sink.release.set()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff_initial_s=0.01, backoff_max_s=0.02)
    await run_until(pipeline, lambda: source.committed == [0, 1, 2])
    assert sink.written == [0, 1, 2]
    # The retry goes through write (a prepared value is sent once); batch 2's prepared value is used.
    assert sink.events.count("write 0") == 1 and "write 2" not in sink.events
    assert sink.events.index("sent 0") < sink.events.index("send 2")


async def test_stop_finishes_the_batch_in_hand_and_leaves_the_one_ahead_uncommitted() -> None:
    source = ListSource([[rec(0)], [rec(1)]])
    sink = SlowPreparingSink()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    task = asyncio.create_task(pipeline.run())
    await await_for(lambda: _true(lambda: "prepare 1" in sink.events), within=5, what="batch 1 prepared")
    pipeline.stop()
    sink.release.set()
    await asyncio.wait_for(task, 5.0)
    assert source.committed == [0] and sink.written == [0]


async def test_a_preparation_that_fails_falls_back_to_write() -> None:
    class BrokenPrepare(SlowPreparingSink):
        async def prepare(self, records: Sequence[BusRecord]) -> Prepared:
            if not self.events:
                self.events.append("prepare failed")
                raise ValueError("converter bug that only shows ahead of time")
            return await super().prepare(records)

    source = ListSource([[rec(0)], [rec(1)]])
    sink = BrokenPrepare()
    sink.release.set()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    await run_until(pipeline, lambda: source.committed == [0, 1])
    assert sink.written == [0, 1]
    assert sink.events[:2] == ["prepare failed", "write 0"]


async def test_without_read_ahead_nothing_is_polled_while_a_write_is_in_flight() -> None:
    source = ListSource([[rec(0)], [rec(1)]])
    sink = SlowPreparingSink()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, read_ahead=False)
    task = asyncio.create_task(pipeline.run())
    try:
        await await_for(lambda: _true(lambda: "send 0" in sink.events), within=5, what="batch 0 sent")
        assert source.batches == [[rec(1)]]
        sink.release.set()
        await await_for(lambda: _true(lambda: source.committed == [0, 1]), within=5, what="commits")
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 5.0)


async def test_a_sink_without_prepare_is_written_through_write_with_the_next_poll_ahead() -> None:
    source = ListSource([[rec(0)], [rec(1)], [rec(2)]])
    sink = GatedSink("unit-overlap-plain")
    assert not isinstance(sink, PreparingSink)
    pipeline = Pipeline(source, sink, poll_timeout_ms=10)
    task = asyncio.create_task(pipeline.run())
    try:
        await await_for(lambda: _true(lambda: source.batches == [[rec(2)]]), within=5, what="batch 1 polled")
        assert source.committed == [] and sink.written == []
        sink.gate.set()
        await await_for(lambda: _true(lambda: source.committed == [0, 1, 2]), within=5, what="commits")
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 5.0)
    assert sink.written == [0, 1, 2]
