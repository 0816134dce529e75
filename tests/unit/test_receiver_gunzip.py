"""Bounded gzip inflation: normal bodies, concatenated members, bombs and broken input."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import zlib
from collections.abc import Callable

import pytest

from gateway.receivers.compression import (
    GZIP,
    BadGzip,
    Limits,
    TooLarge,
    TooManyMembers,
    decode_async,
    gunzip,
)


def test_roundtrip() -> None:
    data = b"otlp" * 10_000
    assert gunzip(gzip.compress(data), len(data)) == data


def test_exact_limit_is_allowed_one_more_byte_is_not() -> None:
    data = b"x" * 1000
    assert gunzip(gzip.compress(data), 1000) == data
    with pytest.raises(TooLarge):
        gunzip(gzip.compress(data + b"y"), 1000)


def test_concatenated_members() -> None:
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 100) == b"abcdef"


def test_bomb_stops_at_the_limit() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(comp.compress(b"\0" * (1 << 20)) for _ in range(64)) + comp.flush()
    with pytest.raises(TooLarge, match="exceeds 1048576"):
        gunzip(bomb, 1 << 20)


def test_empty_body_is_an_empty_request() -> None:
    assert gunzip(b"", 10) == b""


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"hello" * 100)[:-12]])
def test_bad_or_truncated(body: bytes) -> None:
    with pytest.raises(BadGzip):
        gunzip(body, 10_000)


def test_many_empty_members_are_refused_fast_and_parsing_is_linear() -> None:
    empty = gzip.compress(b"")
    body = empty * (8 * 1024 * 1024 // len(empty))  # ~419,000 members in 8 MiB
    started = time.perf_counter()
    with pytest.raises(TooManyMembers):
        gunzip(body, 32 << 20)
    assert time.perf_counter() - started < 0.5
    # Without the cap the work is linear in the input: 4x the members, not 16x the time.
    small, large = empty * 5_000, empty * 20_000
    t_small = _timed(lambda: gunzip(small, 1 << 20, max_members=10**9))
    t_large = _timed(lambda: gunzip(large, 1 << 20, max_members=10**9))
    assert t_large < 8 * t_small, (t_small, t_large)


def _timed(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def test_member_cap_is_inclusive() -> None:
    assert gunzip(gzip.compress(b"a") * 4, 100, max_members=4) == b"aaaa"
    with pytest.raises(TooManyMembers, match="more than 4"):
        gunzip(gzip.compress(b"a") * 5, 100, max_members=4)


def test_ratio_refuses_a_small_bomb_fast_but_never_a_body_under_the_floor() -> None:
    bomb = gzip.compress(b"\0" * (32 << 20))  # ~32 KiB -> 32 MiB
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="ratio"):
        gunzip(bomb, 64 << 20, max_ratio=200)
    assert time.perf_counter() - started < 0.2
    under_floor = b"\0" * ((1 << 20) - 1)  # ratio ~1000, but the output stays under 1 MiB
    assert gunzip(gzip.compress(under_floor), 64 << 20, max_ratio=200) == under_floor


def test_trailing_zero_padding_is_ignored_other_trailing_bytes_are_not() -> None:
    body = gzip.compress(b"abc") + gzip.compress(b"def")
    assert gunzip(body + b"\0" * 512, 100) == b"abcdef"
    for garbage in (b"x", b"\0\0x"):
        with pytest.raises(BadGzip):
            gunzip(body + garbage, 100)


def test_output_cut_exactly_at_a_chunk_boundary_is_not_truncation() -> None:
    data = os.urandom(1 << 20) + b"\0" * (3 << 20)  # output crosses several 256 KiB chunks
    assert gunzip(gzip.compress(data), len(data)) == data


async def test_large_bodies_inflate_off_the_event_loop() -> None:
    """While a 24 MiB gzip body inflates the loop keeps ticking; inline, it could not tick at all.

    Judged on the count of ticks, not the largest gap: on a loaded 2-core machine the scheduler
    alone makes gaps of tens of milliseconds now and then.
    """
    data = os.urandom(1 << 20) * 24  # 24 MiB that gzip cannot shrink: ~100 ms of inflation
    body = gzip.compress(data, compresslevel=1)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    gaps.clear()
    started = time.perf_counter()
    out = await decode_async(GZIP, body, Limits(32 << 20))
    took = time.perf_counter() - started
    stop.set()
    await ticker
    assert out == data
    gaps.sort()
    print(f"decode_async of {len(body)} B took {took * 1e3:.1f} ms; the loop ticked {len(gaps)} times, "
          f"median gap {gaps[len(gaps) // 2] * 1e3:.1f} ms, max {gaps[-1] * 1e3:.1f} ms")
    assert len(gaps) >= 5
    assert gaps[len(gaps) // 2] < 0.01
