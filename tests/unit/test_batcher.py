"""Batcher: grouping, group commit (flush at once when idle, gather behind a publish in flight), the
byte and age caps, concurrency, failure propagation, close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bus.contract import Batch, BusUnavailable
from gateway.batcher import Batcher
from otlp.signals import Signal
from otlp.wire import prepare
from tests.otlp_payloads import REQUEST_TYPES, item_count, payload
from tests.waiting import await_for

HOUR = 3600.0


class Recorder:
    """A publish callable that records batches; optionally waits on a gate or fails."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None
        self.running = 0
        self.max_running = 0

    def release(self) -> None:
        """Let every held publish (and every later one) through."""
        assert self.gate is not None
        self.gate.set()

    async def __call__(self, batch: Batch) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            self.batches.append(batch)
        finally:
            self.running -= 1


async def test_groups_by_signal_and_tenant() -> None:
    rec = Recorder()
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=HOUR)
    futs = [b.add(Signal.TRACES, "a", b"12345", 1, "c1"), b.add(Signal.TRACES, "b", b"xxxxx", 1, "c3"),
            b.add(Signal.LOGS, "a", b"yyyyy", 2, "c4"), b.add(Signal.TRACES, "a", b"67890", 2, "c2")]
    assert b.pending_bytes == 20 and b.pending_items == 6
    await asyncio.wait_for(asyncio.gather(*futs), 5)
    got = sorted((x.signal, x.tenant, x.payload, x.items, tuple(x.correlation_ids)) for x in rec.batches)
    assert got == [
        (Signal.LOGS, "a", b"yyyyy", 2, ("c4",)),
        (Signal.TRACES, "a", b"1234567890", 3, ("c1", "c2")),
        (Signal.TRACES, "b", b"xxxxx", 1, ("c3",))]
    await b.close()
    assert b.pending_bytes == 0 and b.pending_items == 0


async def test_idle_key_flushes_at_once() -> None:
    """Nothing in flight for the key: the request is published without waiting for the age cap."""
    rec = Recorder()
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=HOUR)
    await asyncio.wait_for(b.add(Signal.TRACES, "t", b"a", 1, "c1"), 5)
    await asyncio.wait_for(b.add(Signal.TRACES, "t", b"b", 1, "c2"), 5)  # idle again: at once again
    assert [x.payload for x in rec.batches] == [b"a", b"b"]
    await b.close()


async def test_requests_arriving_during_an_inflight_publish_form_exactly_one_next_batch() -> None:
    rec, b, first = await _one_in_flight(Signal.TRACES, "t", b"a", max_bytes=1 << 20, max_age_s=HOUR)
    behind = []
    for i, part in enumerate((b"b", b"c", b"d")):
        behind.append(b.add(Signal.TRACES, "t", part, 1, f"n{i}"))
        await asyncio.sleep(0)  # separate loop turns: they still wait for the one in flight
        await asyncio.sleep(0)
    other_key = b.add(Signal.TRACES, "u", b"z", 1, "u1")  # another tenant is not held up
    await await_for(_async(lambda: rec.running == 2), within=5, what="the other key's publish")
    assert not first.done() and not any(f.done() for f in behind)
    assert b.pending_items == 5
    rec.release()
    await asyncio.wait_for(asyncio.gather(first, *behind, other_key), 5)
    assert sorted(x.payload for x in rec.batches if x.tenant == "t") == [b"a", b"bcd"]
    assert [x.items for x in rec.batches if x.tenant == "t"] == [1, 3]
    await b.close()
    assert b.pending_bytes == 0


async def test_byte_cap_flushes_while_the_key_is_busy() -> None:
    rec, b, _ = await _one_in_flight(Signal.TRACES, "a", b"x", max_bytes=10, max_age_s=HOUR)
    b.add(Signal.TRACES, "a", b"12345", 1, "c1")
    b.add(Signal.TRACES, "a", b"67890", 2, "c2")  # reaches 10 bytes: flushed though the key is busy
    await await_for(_async(lambda: rec.running == 2), within=5, what="the full batch in flight")
    rec.release()
    await b.close()
    assert [(x.payload, x.items, x.correlation_ids) for x in rec.batches] == [
        (b"x", 1, ["c0"]), (b"1234567890", 3, ["c1", "c2"])]


async def test_payload_that_would_overflow_starts_a_new_batch() -> None:
    rec, b, _ = await _one_in_flight(Signal.TRACES, "a", b"0", max_bytes=10, max_age_s=HOUR)
    b.add(Signal.TRACES, "a", b"123456", 1, "c1")
    b.add(Signal.TRACES, "a", b"abcdef", 1, "c2")  # 12 > 10: the gathered batch goes alone
    await await_for(_async(lambda: rec.running == 2), within=5, what="the first gathered batch in flight")
    rec.release()
    await b.close()
    assert [x.payload for x in rec.batches] == [b"0", b"123456", b"abcdef"]


async def test_oversized_payload_goes_in_a_batch_of_its_own() -> None:
    rec = Recorder()
    b = Batcher(rec, max_bytes=10, max_age_s=HOUR)
    b.add(Signal.TRACES, "a", b"12", 1, "c1")
    big = b.add(Signal.TRACES, "a", b"x" * 50, 7, "c2")
    await asyncio.wait_for(big, 5)
    await b.close()
    assert [x.payload for x in rec.batches] == [b"12", b"x" * 50]


async def test_age_cap_flushes_while_the_key_is_busy() -> None:
    rec, b, _ = await _one_in_flight(Signal.METRICS, "t", b"ab", max_bytes=1 << 20, max_age_s=0.05)
    b.add(Signal.METRICS, "t", b"cd", 1, "c2")
    b.add(Signal.METRICS, "t", b"ef", 1, "c3")
    await await_for(_async(lambda: rec.running == 2), within=5, what="the aged batch in flight")
    rec.release()
    await b.close()
    assert [x.payload for x in rec.batches] == [b"ab", b"cdef"]


async def test_per_key_bound_allows_that_many_publishes_before_gathering() -> None:
    rec, b, _ = await _one_in_flight(Signal.LOGS, "t", b"a", max_bytes=1 << 20, max_age_s=HOUR, per_key=2)
    b.add(Signal.LOGS, "t", b"b", 1, "c2")
    await await_for(_async(lambda: rec.running == 2), within=5, what="second publish in flight")
    late = [b.add(Signal.LOGS, "t", p, 1, "c") for p in (b"c", b"d")]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.running == 2 and not any(f.done() for f in late)
    rec.release()
    await asyncio.wait_for(asyncio.gather(*late), 5)
    assert sorted(x.payload for x in rec.batches) == [b"a", b"b", b"cd"]
    await b.close()


async def test_zero_age_batches_what_arrives_in_the_same_loop_turn() -> None:
    rec = Recorder()
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=0)
    futs = [b.add(Signal.LOGS, "t", bytes([i]), 1, f"c{i}") for i in range(5)]
    await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert [x.items for x in rec.batches] == [5]
    await b.close()


async def test_slow_publish_does_not_block_filling_and_concurrency_is_bounded() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    b = Batcher(rec, max_bytes=1, max_age_s=HOUR, max_inflight=3)
    futs = [b.add(Signal.TRACES, "t", b"x", 1, str(i)) for i in range(10)]  # each fills a batch
    await await_for(_async(lambda: rec.running == 3), within=5, what="three publishes in flight")
    assert not any(f.done() for f in futs)
    assert b.pending_items == 10
    rec.release()
    await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert rec.max_running == 3
    assert len(rec.batches) == 10
    await b.close()


async def test_publish_failure_reaches_every_future_of_the_batch() -> None:
    rec = Recorder()
    rec.fail = BusUnavailable("kafka down")
    errors: list[tuple[Batch, BaseException]] = []
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=HOUR, on_error=lambda bt, e: errors.append((bt, e)))
    futs = [b.add(Signal.TRACES, "t", b"x", 1, str(i)) for i in range(3)]
    other = b.add(Signal.LOGS, "t", b"y", 1, "l")
    b.flush_all()
    for f in [*futs, other]:
        with pytest.raises(BusUnavailable):
            await asyncio.wait_for(f, 5)
    assert len(errors) == 2 and b.pending_bytes == 0
    rec.fail = None
    ok = b.add(Signal.TRACES, "t", b"z", 1, "again")
    await b.close()
    await asyncio.wait_for(ok, 5)


async def test_on_flush_reports_batch_and_duration() -> None:
    seen: list[tuple[int, float]] = []
    b = Batcher(Recorder(), max_bytes=4, max_age_s=HOUR, on_flush=lambda bt, s: seen.append((bt.items, s)))
    await asyncio.wait_for(b.add(Signal.TRACES, "t", b"1234", 9, "c"), 5)
    assert len(seen) == 1 and seen[0][0] == 9 and seen[0][1] >= 0
    await b.close()


async def test_close_flushes_everything_and_waits_for_publishes() -> None:
    rec = Recorder()
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=HOUR)
    futs = [b.add(Signal(s), f"t{i}", b"x", 1, "c") for i in range(3) for s in ("traces", "logs")]
    await b.close()
    assert all(f.done() and f.exception() is None for f in futs)
    assert len(rec.batches) == 6
    with pytest.raises(RuntimeError):
        b.add(Signal.TRACES, "t", b"x", 1, "c")


async def test_batch_of_prepared_requests_is_one_valid_request() -> None:
    rec = Recorder()
    b = Batcher(rec, max_bytes=1 << 20, max_age_s=HOUR)
    parts = [prepare(Signal.TRACES, payload(Signal.TRACES, spans_per_request=5, seed=i),
                     [("tenant.id", "t")]) for i in range(4)]
    for p in parts:
        b.add(Signal.TRACES, "t", p.payload, p.items, "c")
    await b.close()
    (batch,) = rec.batches
    assert item_count(Signal.TRACES, batch.payload) == batch.items == 20
    assert len(REQUEST_TYPES[Signal.TRACES].FromString(batch.payload).resource_spans) == 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_bytes=0, max_age_s=1)
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_bytes=1, max_age_s=-1)
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_bytes=1, max_age_s=1, max_inflight_per_key=0)


async def _one_in_flight(signal: Signal, tenant: str, first: bytes, max_bytes: int, max_age_s: float,
                         per_key: int = 1) -> tuple[Recorder, Batcher, asyncio.Future[None]]:
    """A batcher whose publishes hold until ``rec.gate`` is set, with ``first`` being published."""
    rec = Recorder()
    rec.gate = asyncio.Event()
    b = Batcher(rec, max_bytes=max_bytes, max_age_s=max_age_s, max_inflight_per_key=per_key)
    fut = b.add(signal, tenant, first, 1, "c0")
    await await_for(_async(lambda: rec.running == 1), within=5, what="first publish in flight")
    return rec, b, fut


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A sync condition in the shape ``await_for`` polls."""
    async def probe() -> bool:
        return check()
    return probe


async def test_cancelled_publish_answers_retryable_instead_of_hanging() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    b = Batcher(rec, max_bytes=1, max_age_s=HOUR)
    fut = b.add(Signal.TRACES, "t", b"x", 1, "c")
    await await_for(_async(lambda: rec.running == 1), within=5, what="publish started")
    for task in list(b._inflight):
        task.cancel()
    with pytest.raises(BusUnavailable, match="stopping"):
        await asyncio.wait_for(fut, 5)
    await b.close()
    assert b.pending_items == 0


async def test_publish_cancelled_before_it_started_still_answers_and_releases_its_bytes() -> None:
    b = Batcher(Recorder(), max_bytes=1, max_age_s=HOUR)
    fut = b.add(Signal.TRACES, "t", b"x", 1, "c")  # full: flushed, its task not yet run
    for task in list(b._inflight):
        task.cancel()
    with pytest.raises(BusUnavailable, match="stopping"):
        await asyncio.wait_for(fut, 5)
    await b.close()
    assert b.pending_bytes == 0 and b.pending_items == 0


async def test_unexpected_publish_error_becomes_bus_unavailable() -> None:
    rec = Recorder()
    rec.fail = KeyError("partition")
    b = Batcher(rec, max_bytes=1, max_age_s=HOUR)
    fut = b.add(Signal.TRACES, "t", b"x", 1, "c")
    with pytest.raises(BusUnavailable, match="KeyError"):
        await asyncio.wait_for(fut, 5)
    await b.close()
    assert b.pending_bytes == 0
