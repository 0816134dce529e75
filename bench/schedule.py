"""Open-loop send schedule: when each request *should* leave, independent of the responses.

A closed loop slows down with the system under test and so hides its stalls (coordinated
omission). In the open loop each request has an intended send time fixed in advance, and its
latency is measured from that time: a stall shows up as latency for every request that should
have gone out during it, as a real client population would experience.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def intended_times(rate: float, start: float, end: float, *, poisson: bool = False,
                   seed: int = 0) -> Iterator[float]:
    """Intended send times in [start, end) for ``rate`` requests per second.

    Evenly spaced by default; ``poisson`` draws exponential gaps (the same mean rate) for
    bursty arrivals. Times are computed from the start, never from the previous send, so a late
    sender does not shift the schedule.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if poisson:
        rng = random.Random(seed)
        t = start
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                return
            yield t
    else:
        i = 0
        while True:
            t = start + i / rate
            if t >= end:
                return
            yield t
            i += 1


def per_process_rate(total_rate: float, processes: int) -> float:
    """Split an offered load across generator processes (each runs its own schedule)."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    return total_rate / processes


def offset_for(process_index: int, processes: int, rate_per_process: float) -> float:
    """Phase offset so N processes at rate r interleave evenly instead of firing together."""
    if rate_per_process <= 0:
        return 0.0
    return (process_index / processes) / rate_per_process
