"""The embedded pipeline (memory bus -> file sink with its helper) against content the converter
fails on: the pipeline never stalls, the good data is written exactly once, the bad part is set
aside. Bytes go straight onto the bus, past the gateway's edge, which may refuse such input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bus.contract import Batch
from bus.memory import MemoryBus
from otlp.signals import Signal
from pipelines.pipeline import Pipeline
from pipelines.sinks.file import FileSink
from tests.unit.test_file_sink import deep_resource_spans, names, spans
from tests.waiting import await_for


def rejected_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_a_poisoned_batch_does_not_stall_the_pipeline_nor_double_its_neighbours(tmp_path: Path) -> None:
    bus = MemoryBus(max_records=4, full_wait_s=10.0)
    source = bus.source()
    sink = FileSink(tmp_path, offload=True)
    await sink.start()
    pipeline = Pipeline(source, sink, dead_letter=sink.park, max_records=4, backoff_initial_s=0.01)
    task = asyncio.create_task(pipeline.run())
    bad = deep_resource_spans(100)
    payloads = [spans("a"), spans("b") + bad + spans("c"), spans("d")] + [spans(f"e{i}") for i in range(10)]
    try:
        # More batches than the bus holds: a stalled pipeline would leave publishers waiting.
        await asyncio.wait_for(asyncio.gather(*(bus.publish(Batch(Signal.TRACES, "acme", p, 1))
                                                for p in payloads)), 10)

        async def drained() -> bool:
            return source.committed == bus.end_offset

        await await_for(drained, within=10, what="the pipeline to commit everything")
    finally:
        pipeline.stop()
        await asyncio.wait((task,), timeout=5)
        await sink.stop()
    assert sorted(names(tmp_path / "acme" / "traces.jsonl")) == sorted(
        ["a", "b", "c", "d"] + [f"e{i}" for i in range(10)])
    [reject] = rejected_lines(tmp_path / "acme" / "rejected" / "traces.jsonl")
    assert reject["offset"] == 1
    assert pipeline.dead_lettered == 0  # set aside by the sink itself, part by part
