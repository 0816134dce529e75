"""Start registers stop (runtime.lifecycle): shutdown is the reverse of start, a failed start
stops what had started, and the gateway worker stops in the at-least-once order."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway import server
from gateway.admin import Admin
from gateway.embedded import Embedded
from runtime import lifecycle
from settings.config import Config


class Part:
    def __init__(self, name: str, log: list[str], fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise OSError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} failed to stop")


class Three(lifecycle.Composite):
    def __init__(self, log: list[str], **fail: bool) -> None:
        self.parts = [Part(n, log, fail_start=fail.get(f"{n}_start", False),
                           fail_stop=fail.get(f"{n}_stop", False)) for n in ("a", "b", "c")]

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        for part in self.parts:
            await lifecycle.enter(stack, part)


async def test_stop_runs_in_reverse_order_of_start_and_only_once() -> None:
    log: list[str] = []
    three = Three(log)
    await three.start()
    await three.stop()
    await three.stop()
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_a_failed_start_stops_what_had_started_and_raises() -> None:
    log: list[str] = []
    with pytest.raises(OSError, match="c cannot start"):
        await Three(log, c_start=True).start()
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_a_failing_stop_does_not_keep_the_others_from_stopping() -> None:
    log: list[str] = []
    three = Three(log, b_stop=True)
    await three.start()
    with pytest.raises(RuntimeError, match="b failed to stop"):
        await three.stop()
    assert log[3:] == ["stop c", "stop b", "stop a"]


async def test_a_background_task_is_cancelled_and_awaited_when_the_stack_closes() -> None:
    ran = asyncio.Event()

    async def forever() -> None:
        ran.set()
        await asyncio.Event().wait()

    async with AsyncExitStack() as stack:
        task = lifecycle.background(stack, forever(), name="forever")
        await ran.wait()
    assert task.cancelled()


async def test_the_gateway_worker_stops_intake_first_and_its_admin_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers closed, batches flushed, the embedded pipeline drained, the bus stopped, admin last:
    the at-least-once order, from the order of start alone."""
    cfg = Config()
    cfg.server.grpc_port = cfg.server.http_port = cfg.admin.port = 0
    cfg.server.host = cfg.admin.host = "127.0.0.1"
    cfg.pipelines.file.data_dir = str(tmp_path)
    order: list[str] = []

    def record(name: str, stop: object) -> object:
        async def recorded(self: object) -> None:
            order.append(name)
            await stop(self)  # type: ignore[operator]
        return recorded

    monkeypatch.setattr(Admin, "stop", record("admin", Admin.stop))
    monkeypatch.setattr(server.Receivers, "stop", record("receivers", server.Receivers.stop))
    monkeypatch.setattr(Embedded, "stop", record("embedded", Embedded.stop))
    worker = server.Worker(cfg, 0, asyncio.Event())
    assert worker.readiness() == (False, "receivers not listening")
    close_intake, batcher_close, bus_stop = worker.ingest.close_intake, worker.batcher.close, worker.bus.stop

    def intake() -> None:
        order.append("intake")
        close_intake()

    async def batcher() -> None:
        order.append("batcher")
        await batcher_close()

    async def bus() -> None:
        order.append("bus")
        await bus_stop()

    monkeypatch.setattr(worker.ingest, "close_intake", intake)
    monkeypatch.setattr(worker.batcher, "close", batcher)
    monkeypatch.setattr(worker.bus, "stop", bus)
    await worker.start()
    try:
        assert worker.readiness()[0]
    finally:
        await worker.stop()
    assert order == ["intake", "receivers", "batcher", "embedded", "bus", "admin"]
    assert not worker.failed and worker.readiness() == (False, "receivers not listening")
