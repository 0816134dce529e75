"""``batch.max_inflight_per_key`` from the configuration to the batcher: how many publishes of one
(signal, tenant) overlap before arrivals gather for the next batch, and its validation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batcher import Batcher, batcher_for
from otlp.signals import Signal
from settings.config import ConfigError, load
from tests.unit.test_batcher import HOUR, Recorder, _async
from tests.waiting import await_for


def _configured(per_key: str | None, rec: Recorder) -> Batcher:
    env = {"TG_BATCH__MAX_AGE_MS": str(HOUR * 1000)}
    if per_key is not None:
        env["TG_BATCH__MAX_INFLIGHT_PER_KEY"] = per_key
    return batcher_for(load(env=env).batch, rec)


async def test_two_in_flight_per_key_overlap_two_publishes_of_one_key() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    b = _configured("2", rec)
    first = b.add(Signal.TRACES, "t", b"a", 1, "c1")
    await await_for(_async(lambda: rec.running == 1), within=5, what="first publish in flight")
    second = b.add(Signal.TRACES, "t", b"b", 1, "c2")
    await await_for(_async(lambda: rec.running == 2), within=5, what="second publish of the key in flight")
    rec.release()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert rec.max_running == 2 and sorted(x.payload for x in rec.batches) == [b"a", b"b"]
    await b.close()


async def test_one_in_flight_per_key_by_default_gathers_behind_the_publish() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    b = _configured(None, rec)
    first = b.add(Signal.TRACES, "t", b"a", 1, "c1")
    await await_for(_async(lambda: rec.running == 1), within=5, what="first publish in flight")
    behind = [b.add(Signal.TRACES, "t", p, 1, "c") for p in (b"b", b"c")]
    # Another key still publishes: the loop has run the batcher's flushes, none for "t".
    other = b.add(Signal.TRACES, "u", b"z", 1, "u1")
    await await_for(_async(lambda: rec.running == 2), within=5, what="the other key's publish")
    assert rec.running == 2 and not first.done() and not any(f.done() for f in behind)
    rec.release()
    await asyncio.wait_for(asyncio.gather(first, *behind, other), 5)
    assert rec.max_running == 2  # "a" and "z": never a second publish of "t" beside "a"
    assert [x.payload for x in rec.batches if x.tenant == "t"] == [b"a", b"bc"]
    await b.close()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_inflight_per_key_below_one_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"batch\.max_inflight_per_key"):
        load(env={"TG_BATCH__MAX_INFLIGHT_PER_KEY": value})


def test_max_inflight_per_key_defaults_to_one() -> None:
    assert load(env={}).batch.max_inflight_per_key == 1
