"""One exponential backoff for every retry loop: Kafka reconnects, sink retries, start-up steps.

The knobs are the Collector's ``retry_on_failure`` ones: the first delay (``initial_s``,
initial_interval), its growth per failure (``multiplier``), the ceiling (``max_s``,
max_interval) and the jitter (``jitter``, randomization_factor: each delay is drawn from
``delay * (1 ± jitter)``, so workers that lost the same broker do not come back in step).
Unlike the Collector's, a jittered delay never exceeds ``max_s``: the ceiling is a promise to
whoever waits on it.

The sleep and the random source are injectable, so a test drives the delays without sleeping.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Delays ``initial_s``, ``initial_s * multiplier``, ... up to ``max_s``, until ``reset()``."""

    def __init__(self, initial_s: float = 0.2, max_s: float = 5.0, *, multiplier: float = 2.0,
                 jitter: float = 0.0, sleep: Sleep = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        if initial_s <= 0 or max_s < initial_s or multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, multiplier >= 1 and 0 <= jitter < 1; "
                             f"got {initial_s}, {max_s}, {multiplier}, {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._sleep = sleep
        self._rand = rand
        self._interval = initial_s
        self.failures = 0
        """Delays handed out since the last ``reset()``."""

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the one after it."""
        interval = self._interval
        self._interval = min(interval * self.multiplier, self.max_s)
        self.failures += 1
        if self.jitter:
            interval *= 1 + self.jitter * (2 * self._rand() - 1)
        return min(interval, self.max_s)

    def reset(self) -> None:
        """After a success: the next failure waits ``initial_s`` again."""
        self._interval = self.initial_s
        self.failures = 0

    async def sleep(self, stop: asyncio.Event | None = None, delay: float | None = None) -> bool:
        """Wait ``delay`` (default: ``next_delay()``), or less if ``stop`` is set meanwhile.

        True when ``stop`` ended the wait (or was already set): the caller gives up retrying.
        Pass ``delay`` when the caller took ``next_delay()`` itself, to log it first.
        """
        if delay is None:
            delay = self.next_delay()
        if stop is None:
            await self._sleep(delay)
            return False
        if stop.is_set():
            return True
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((sleeping, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, stopped):
                task.cancel()
            await asyncio.wait((sleeping, stopped))
        return stop.is_set()
