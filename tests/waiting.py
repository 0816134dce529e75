"""Waiting on a condition with a deadline: the only way tests here synchronise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], within: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")


async def await_for(check: Callable[[], Awaitable[T | None]], within: float = 30.0, interval: float = 0.05,
                    what: str = "condition") -> T:
    """Async twin of ``wait_for``."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")
