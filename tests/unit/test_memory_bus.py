"""MemoryBus: the embedded bus keeps the Kafka contract (offsets, headers, commit-then-trim)."""

from __future__ import annotations

import pytest

from bus.contract import Batch, BusUnavailable
from bus.memory import MemoryBus
from otlp.signals import Signal


def _batch(signal: Signal, n: int) -> Batch:
    return Batch(signal=signal, tenant="acme", payload=b"x" * n, items=n, correlation_ids=["c1", "c2"])


async def test_records_carry_offsets_topic_and_headers() -> None:
    bus = MemoryBus()
    src = bus.source()
    await bus.publish(_batch(Signal.TRACES, 3))
    await bus.publish(_batch(Signal.LOGS, 2))
    recs = await src.getmany(timeout_ms=100, max_records=10)
    assert [(r.topic, r.offset, r.signal) for r in recs] == [
        ("otlp_spans", 0, Signal.TRACES),
        ("otlp_logs", 1, Signal.LOGS),
    ]
    assert recs[0].tenant == "acme"
    assert recs[0].correlation_ids == ["c1", "c2"]


async def test_getmany_returns_empty_after_timeout_when_idle() -> None:
    bus = MemoryBus()
    assert await bus.source().getmany(timeout_ms=10, max_records=10) == []


async def test_log_is_trimmed_only_past_what_every_source_committed() -> None:
    bus = MemoryBus()
    fast, slow = bus.source(), bus.source()
    for _ in range(3):
        await bus.publish(_batch(Signal.TRACES, 1))
    await fast.commit(await fast.getmany(10, 10))
    assert bus._base == 0  # the slow source has not committed: nothing may be forgotten
    await slow.commit(await slow.getmany(10, 10))
    assert bus._base == 3
    assert bus.end_offset == 3


async def test_signal_filter_commits_past_records_it_does_not_want() -> None:
    bus = MemoryBus()
    traces_only = bus.source([Signal.TRACES])
    await bus.publish(_batch(Signal.TRACES, 1))
    await bus.publish(_batch(Signal.METRICS, 1))
    recs = await traces_only.getmany(10, 10)
    assert [r.signal for r in recs] == [Signal.TRACES]
    await traces_only.commit(recs)
    assert traces_only.committed == 2


async def test_full_log_pushes_back_then_refuses_retryably() -> None:
    bus = MemoryBus(max_records=2, full_wait_s=0.05)
    src = bus.source()
    await bus.publish(_batch(Signal.TRACES, 1))
    await bus.publish(_batch(Signal.TRACES, 1))
    assert bus.readiness()[0] is False
    with pytest.raises(BusUnavailable, match="full"):
        await bus.publish(_batch(Signal.TRACES, 1))
    # Once the sink catches up, publishing resumes with offsets that keep counting.
    await src.commit(await src.getmany(10, 10))
    await bus.publish(_batch(Signal.TRACES, 1))
    assert [r.offset for r in await src.getmany(10, 10)] == [2]
