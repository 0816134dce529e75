"""The one backoff (runtime.backoff) and the retry loops built on it, with an injected sleep:
no test here sleeps for real."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.errors import KafkaConnectionError

from bus.kafka import producer as kafka_bus
from bus.kafka.producer import KafkaBus, reconnect_backoff
from pipelines.pipeline import Pipeline
from pipelines.sinks.base import TransientSinkError
from runtime.backoff import Backoff
from settings.config import KafkaConfig
from tests.kafka_fakes import HealthyClient
from tests.unit.test_pipeline import ListSource, ScriptedSink, rec, run_until
from tests.waiting import await_for


class Sleeps:
    """An injected sleep: records each delay and returns at once (or waits for ``release``)."""

    def __init__(self, hold: bool = False) -> None:
        self.delays: list[float] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.release.wait()


def delays(backoff: Backoff, n: int) -> list[float]:
    return [round(backoff.next_delay(), 6) for _ in range(n)]


def test_delays_grow_by_the_multiplier_up_to_the_ceiling_and_reset_starts_over() -> None:
    backoff = Backoff(0.1, 1.0, multiplier=2.0)
    assert delays(backoff, 6) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.failures == 0
    assert delays(backoff, 2) == [0.1, 0.2]
    assert delays(Backoff(0.5, 5.0, multiplier=1.5), 3) == [0.5, 0.75, 1.125]


def test_jitter_spreads_each_delay_within_its_factor_and_never_past_the_ceiling() -> None:
    low = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.0)
    high = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.999999)
    assert delays(low, 5) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert delays(high, 5) == pytest.approx([1.5, 3.0, 6.0, 8.0, 8.0], abs=1e-4)
    mid = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.5)
    assert delays(mid, 3) == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("args", [(0.0, 1.0, 2.0, 0.0), (2.0, 1.0, 2.0, 0.0), (0.1, 1.0, 0.5, 0.0),
                                  (0.1, 1.0, 2.0, 1.0)])
def test_nonsense_settings_are_refused(args: tuple[float, float, float, float]) -> None:
    initial, ceiling, multiplier, jitter = args
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, ceiling, multiplier=multiplier, jitter=jitter)


async def test_sleep_uses_the_injected_sleep_and_the_next_delay() -> None:
    sleeps = Sleeps()
    backoff = Backoff(0.2, 5.0, sleep=sleeps)
    assert await backoff.sleep() is False
    assert await backoff.sleep(asyncio.Event()) is False
    assert await backoff.sleep(delay=7.0) is False  # a delay the caller took (and logged) itself
    assert sleeps.delays == [0.2, 0.4, 7.0]


async def test_a_stop_ends_the_wait_early_and_says_so() -> None:
    sleeps = Sleeps(hold=True)  # a sleep that would never end by itself
    backoff = Backoff(0.2, 5.0, sleep=sleeps)
    stop = asyncio.Event()
    waiting = asyncio.create_task(backoff.sleep(stop))
    await await_for(lambda: _async(bool(sleeps.delays)), within=2, what="the sleep to start")
    stop.set()
    assert await asyncio.wait_for(waiting, 2) is True
    assert await backoff.sleep(stop) is True  # already stopped: no sleep at all
    assert sleeps.delays == [0.2]


async def _async(value: bool) -> bool:
    return value


async def test_kafka_reconnects_back_off_then_start_over_after_a_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bus's reconnect loop: each failed connect waits the next delay; a connection resets."""
    attempts: list[object] = []

    class Producer:
        def __init__(self) -> None:
            self.client = HealthyClient()

        async def start(self) -> None:
            attempts.append(self)
            if len(attempts) in (1, 2, 3, 5):
                raise KafkaConnectionError("refused")

        async def stop(self) -> None:
            pass

    async def no_topics(cfg: KafkaConfig, names: Sequence[str]) -> None:
        pass

    sleeps = Sleeps()
    monkeypatch.setattr(kafka_bus, "ensure_topics", no_topics)
    bus = KafkaBus(KafkaConfig(start_wait_ms=2000, health_check_interval_ms=60_000),
                   backoff=Backoff(0.2, 0.5, sleep=sleeps))
    monkeypatch.setattr(bus, "_new_producer", Producer)
    await bus.start()
    try:
        assert bus.readiness()[0] and len(attempts) == 4
        assert sleeps.delays == [0.2, 0.4, 0.5]
        bus._mark_broken(attempts[3], "publish failed")  # type: ignore[arg-type]

        async def reconnected() -> bool:
            return len(attempts) == 6 and bus.readiness()[0]

        await await_for(reconnected, within=5, what="the reconnect")
        assert sleeps.delays == [0.2, 0.4, 0.5, 0.2]  # started over after the connection
    finally:
        await bus.stop()


def test_kafka_clients_share_one_reconnect_backoff_bounded_by_the_config() -> None:
    backoff = reconnect_backoff(KafkaConfig(reconnect_backoff_max_ms=1000))
    assert (backoff.initial_s, backoff.max_s, backoff.jitter) == (0.2, 1.0, 0.2)
    assert max(backoff.next_delay() for _ in range(20)) <= 1.0
    assert reconnect_backoff(KafkaConfig(), max_s=3.0).max_s == 3.0


async def test_pipeline_retries_wait_the_backoff_and_honour_a_longer_retry_after() -> None:
    source = ListSource([[rec(0)]])
    slow_down = TransientSinkError("429")
    object.__setattr__(slow_down, "retry_after_s", 3.0)  # what a store's Retry-After asked for
    sink = ScriptedSink("unit-backoff", [TransientSinkError("503"), TransientSinkError("503"), slow_down])
    sleeps = Sleeps()
    pipeline = Pipeline(source, sink, poll_timeout_ms=10, backoff=Backoff(0.1, 2.0, sleep=sleeps))
    await run_until(pipeline, lambda: source.committed == [0])
    # 0.1, 0.2, then the store's 3 s, waited in slices of at most 1 s that keep the source alive.
    assert sleeps.delays == pytest.approx([0.1, 0.2, 1.0, 1.0, 1.0])
    assert source.keepalives == 5 and sink.written == [0]
