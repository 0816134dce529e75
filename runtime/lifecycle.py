"""How a part of a process starts and stops: ``start()`` then ``stop()``, both awaited.

A part made of parts starts each in turn and registers its stop on a
``contextlib.AsyncExitStack`` right after it started, so shutdown runs in the reverse order of
start without a hand-kept list, and a start that fails half-way stops exactly what had started.
The order is the Collector's: what the data reaches last (the bus, the sink) starts first and
stops last, intake starts last and stops first, and what watches the process (admin,
readiness) stops after everything else.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Protocol, TypeVar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Part(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


P = TypeVar("P", bound=Part)


async def enter(stack: AsyncExitStack, part: P) -> P:
    """Start ``part`` and register its ``stop`` on ``stack``; returns the part."""
    await part.start()
    stack.push_async_callback(part.stop)
    return part


def background(stack: AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run ``work`` as a task that ``stack`` cancels (and waits for) when it closes."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    stack.push_async_callback(cancel, task)
    return task


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished; its outcome is left to its own callbacks."""
    task.cancel()
    await asyncio.wait((task,))


def on_stop_signals(handler: Callable[[signal.Signals], None]) -> None:
    """Call ``handler`` on SIGTERM/SIGINT, from the running event loop."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, handler, sig)


class Composite:
    """A part made of parts: ``_start_parts`` starts each on the stack; ``stop`` unwinds it.

    A failing ``_start_parts`` stops what it had started before the error reaches the caller.
    """

    _parts: AsyncExitStack | None = None

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        async with AsyncExitStack() as stack:
            await self._start_parts(stack)
            self._parts = stack.pop_all()

    async def stop(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts.aclose()

