"""The disk spool: record framing and recovery, group commit, modes, limits, replay, restart, adoption."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from bus.contract import Batch, BusUnavailable
from bus.factory import make_bus
from bus.spool import log as fmt
from bus.spool.bus import SpoolBus
from bus.spool.store import SpoolLog
from otlp.signals import Signal
from settings.config import Config, SpoolConfig
from tests.waiting import await_for


class FakeBus:
    """The bus below: records what it took; ``down`` makes it refuse."""

    def __init__(self) -> None:
        self.taken: list[Batch] = []
        self.down = False
        self.delay = 0.0

    @property
    def max_item_bytes(self) -> int | None:
        return 4096

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def readiness(self) -> tuple[bool, str]:
        return (False, "fake: down") if self.down else (True, "fake: up")

    async def publish(self, batch: Batch) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise BusUnavailable("fake: down", 5.0)
        self.taken.append(batch)


def batch(n: int, signal: Signal = Signal.TRACES, tenant: str = "t1", size: int = 100) -> Batch:
    payload = f"{n:08d}".encode() * (size // 8)
    return Batch(signal, tenant, payload, items=n % 7 + 1, correlation_ids=[f"c{n}"])


def cfg(tmp_path: Path, **kw: object) -> SpoolConfig:
    base = SpoolConfig(mode="on_failure", dir=str(tmp_path / "spool"), min_free_bytes=0,
                       replay_max_bytes_per_s=0, stop_drain_ms=2000)
    return replace(base, **kw)  # type: ignore[arg-type]


def order(taken: list[Batch], signal: Signal | None = None) -> bytes:
    """What the bus below took, in order (replay merges a key's consecutive batches into one)."""
    return b"".join(b.payload for b in taken if signal is None or b.signal is signal)


def joined(ns: range | list[int], signal: Signal = Signal.TRACES) -> bytes:
    return b"".join(batch(i, signal).payload for i in ns)


def took(inner: FakeBus) -> int:
    return sum(b.items for b in inner.taken)


def items(ns: range | list[int]) -> int:
    return sum(batch(i).items for i in ns)


# -- format -----------------------------------------------------------------------------------

def test_record_round_trip() -> None:
    b = Batch(Signal.LOGS, "acme é", b"\x0a\x00payload", 3, ["a", "b"])
    frame = fmt.encode(42, b, 1234)
    ((offset, rec),) = list(fmt.parse(frame))
    assert offset == 0 and isinstance(rec, fmt.Record)
    assert (rec.seq, rec.appended_ms, rec.size) == (42, 1234, len(frame))
    assert rec.batch == b


def write_segment(directory: Path, frames: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / fmt.segment_name(1)
    path.write_bytes(b"".join(frames))
    return path


def test_recover_cuts_a_torn_tail(tmp_path: Path) -> None:
    frames = [fmt.encode(i, batch(i)) for i in range(1, 6)]
    path = write_segment(tmp_path, frames)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - len(frames[-1]) // 2])  # the last record cut mid-way
    rec = fmt.recover(tmp_path)
    assert (rec.records, rec.corrupt, rec.next_seq) == (4, 0, 5)
    assert rec.torn_bytes == len(frames[-1]) - len(frames[-1]) // 2
    assert path.read_bytes() == b"".join(frames[:4])  # cut at the last valid record


def test_recover_quarantines_a_flipped_byte_and_keeps_the_rest(tmp_path: Path) -> None:
    frames = [fmt.encode(i, batch(i)) for i in range(1, 6)]
    path = write_segment(tmp_path, frames)
    data = bytearray(path.read_bytes())
    at = len(frames[0]) + len(frames[1]) + 40  # inside the third record's body
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    rec = fmt.recover(tmp_path)
    assert (rec.records, rec.corrupt, rec.torn_bytes) == (4, 1, 0)
    assert [r.seq for _, r in fmt.parse(path.read_bytes())] == [1, 2, 4, 5]  # type: ignore[union-attr]
    (bad,) = (tmp_path / fmt.QUARANTINE).iterdir()
    assert bad.read_bytes() == bytes(data[len(frames[0]) + len(frames[1]):][: len(frames[2])])


def test_recover_survives_garbage_and_a_corrupt_length(tmp_path: Path) -> None:
    frames = [fmt.encode(i, batch(i)) for i in range(1, 4)]
    path = write_segment(tmp_path, frames)
    data = bytearray(path.read_bytes())
    data[len(frames[0]) + 4: len(frames[0]) + 8] = b"\xff\xff\xff\x7f"  # second record's length
    path.write_bytes(bytes(data))
    (tmp_path / fmt.segment_name(99)).write_bytes(b"\x00garbage" * 50)
    rec = fmt.recover(tmp_path)
    assert rec.records == 2 and rec.corrupt == 1
    assert not (tmp_path / fmt.segment_name(99)).exists()  # nothing valid in it


def test_ledger_round_trip_and_bad_ledger(tmp_path: Path) -> None:
    assert fmt.read_ledger(tmp_path) == 0
    fmt.write_ledger(tmp_path, 77)
    assert fmt.read_ledger(tmp_path) == 77
    (tmp_path / fmt.LEDGER).write_bytes(b"\x01" * 12)
    assert fmt.read_ledger(tmp_path) == 0  # unreadable: replay more, never less


# -- the bus stage ----------------------------------------------------------------------------

def test_stage_off_by_default_and_on_when_configured(tmp_path: Path) -> None:
    inner = FakeBus()
    assert make_bus(Config(), base=inner) is inner
    c = Config(spool=cfg(tmp_path))
    assert isinstance(make_bus(c, base=inner), SpoolBus)


async def test_on_failure_goes_straight_while_the_bus_is_up(tmp_path: Path) -> None:
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path), inner)
    await bus.start()
    for i in range(5):
        await bus.publish(batch(i))
    assert order(inner.taken) == joined(range(5))
    assert bus.logs[-1].records == 0 and not fmt.segments(bus.logs[-1].dir)
    await bus.stop()


async def test_on_failure_spools_an_outage_and_replays_in_order(tmp_path: Path) -> None:
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path), inner)
    await bus.start()
    await bus.publish(batch(0))
    inner.down = True
    # Every publish is answered OK while the bus below is down: the spool holds them.
    await asyncio.gather(*(bus.publish(batch(i, Signal.TRACES if i % 2 else Signal.LOGS))
                           for i in range(1, 41)))
    ready, why = bus.readiness()
    assert ready and "absorbing" in why and "40 record(s)" in why, why
    assert len(inner.taken) == 1
    inner.down = False
    await await_for(lambda: _async(took(inner) == items(range(41))), within=20, what="replay")
    assert order(inner.taken, Signal.TRACES) == joined([0, *range(1, 41, 2)])
    assert order(inner.taken, Signal.LOGS) == joined(range(2, 41, 2), Signal.LOGS)
    await await_for(lambda: _async(not bus._backlog()), within=5, what="backlog gone")
    # New batches go straight again once the backlog is gone.
    await bus.publish(batch(99))
    assert inner.taken[-1].payload == batch(99).payload
    await bus.stop()


async def _async(value: bool) -> bool:
    return value


async def test_always_spools_everything_and_deletes_acknowledged_segments(tmp_path: Path) -> None:
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path, mode="always", segment_bytes=2000), inner)
    await bus.start()
    await asyncio.gather(*(bus.publish(batch(i)) for i in range(60)))
    await await_for(lambda: _async(took(inner) == items(range(60))), within=20, what="drain")
    assert order(inner.taken) == joined(range(60))
    await await_for(lambda: _async(len(fmt.segments(bus.logs[-1].dir)) <= 1), within=5,
                    what="segments deleted")
    await bus.stop()
    # Everything was acknowledged: a restart resends nothing.
    inner2 = FakeBus()
    bus2 = SpoolBus(cfg(tmp_path, mode="always"), inner2)
    await bus2.start()
    await bus2.stop()
    assert inner2.taken == []


async def test_full_refuses_with_a_retry_hint_and_resumes_as_it_drains(tmp_path: Path) -> None:
    inner = FakeBus()
    inner.down = True
    one = len(fmt.encode(1, batch(1)))
    bus = SpoolBus(cfg(tmp_path, max_bytes=10 * one, full_retry_after_ms=3000), inner)
    await bus.start()
    for i in range(10):
        await bus.publish(batch(i))
    with pytest.raises(BusUnavailable) as info:
        await bus.publish(batch(10))
    assert info.value.retry_after_s == 3.0 and "full" in str(info.value)
    assert bus.readiness()[0] is False
    inner.down = False
    await await_for(lambda: _async(took(inner) == items(range(10))), within=20, what="drain")
    await bus.publish(batch(10))
    assert order(inner.taken) == joined(range(11))
    await bus.stop()


async def test_restart_replays_what_was_spooled_and_not_what_was_acknowledged(tmp_path: Path) -> None:
    inner = FakeBus()
    c = cfg(tmp_path, stop_drain_ms=0)
    bus = SpoolBus(c, inner)
    await bus.start()
    inner.down = True
    for i in range(20):
        await bus.publish(batch(i))
    await bus.stop()  # the bus below never came back
    assert inner.taken == []
    inner2 = FakeBus()
    bus2 = SpoolBus(c, inner2)
    await bus2.start()
    await await_for(lambda: _async(took(inner2) == items(range(20))), within=20, what="replay after restart")
    assert order(inner2.taken) == joined(range(20))
    await bus2.stop()
    inner3 = FakeBus()
    bus3 = SpoolBus(c, inner3)
    await bus3.start()
    await bus3.stop()
    assert inner3.taken == []


async def test_a_directory_left_by_another_worker_is_adopted_and_replayed(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    gone = base / "worker-3"
    write_segment(gone, [fmt.encode(i, batch(i, tenant="old")) for i in range(1, 6)])
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path), inner)
    await bus.start()
    await await_for(lambda: _async(took(inner) == items(range(1, 6))), within=20, what="adopted replay")
    assert all(b.tenant == "old" for b in inner.taken)
    await await_for(lambda: _async(not fmt.segments(gone)), within=5, what="adopted files removed")
    await bus.stop()


async def test_a_slow_bus_that_fails_spools_behind_its_own_earlier_batch(tmp_path: Path) -> None:
    """A publish failing late keeps its place: a later batch of the same key waits for it."""
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path), inner)
    await bus.start()
    inner.delay = 0.05
    inner.down = True
    first = asyncio.ensure_future(bus.publish(batch(1)))
    await asyncio.sleep(0.01)
    # Another key's failure makes a backlog; then batch 2 of the first key goes to the spool.
    await bus.publish(batch(50, Signal.LOGS))
    second = asyncio.ensure_future(bus.publish(batch(2)))
    await asyncio.gather(first, second)
    inner.delay = 0.0
    inner.down = False
    await await_for(lambda: _async(took(inner) == items([1, 2, 50])), within=20, what="replay")
    assert order(inner.taken, Signal.TRACES) == joined([1, 2])
    await bus.stop()


def test_cli_inspect_reports_without_changing_anything(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from bus.spool.command import inspect_dir, spool_dirs
    from gateway.cli import main

    d = tmp_path / "spool" / "worker-0"
    frames = [fmt.encode(i, batch(i, Signal.LOGS, "acme")) for i in range(1, 4)]
    path = write_segment(d, frames)
    path.write_bytes(path.read_bytes()[:-5])  # torn tail
    before = path.read_bytes()
    assert spool_dirs(tmp_path / "spool") == [d]
    report = inspect_dir(d)
    assert report["records"] == 2 and report["torn_tail_bytes"] > 0
    items = batch(1).items + batch(2).items
    assert report["by_signal_tenant"] == {"logs/acme": {"records": 2, "items": items}}
    assert main(["spool", "inspect", "--dir", str(tmp_path / "spool")]) == 0
    assert "logs/acme: 2 batch(es)" in capsys.readouterr().out
    assert path.read_bytes() == before


async def test_many_publishes_of_one_key_failing_together_all_spool_in_order(tmp_path: Path) -> None:
    """Concurrent publishes of one key that all time out below each wait only for the earlier ones."""
    inner = FakeBus()
    bus = SpoolBus(cfg(tmp_path), inner)
    await bus.start()
    inner.delay = 0.05
    inner.down = True
    tasks = []
    for i in range(8):
        tasks.append(asyncio.ensure_future(bus.publish(batch(i))))
        await asyncio.sleep(0.001)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    inner.delay = 0.0
    inner.down = False
    await await_for(lambda: _async(took(inner) == items(range(8))), within=20, what="replay")
    assert order(inner.taken) == joined(range(8))
    await bus.stop()


async def test_a_publish_failing_part_way_counts_as_a_possible_duplicate(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def ambiguous() -> float:
        return REGISTRY.get_sample_value("gateway_spool_ambiguous_items_total", {"signal": "traces"}) or 0.0

    class TimesOut(FakeBus):
        async def publish(self, batch: Batch) -> None:
            try:
                raise TimeoutError("no acknowledgement")
            except TimeoutError as exc:
                raise BusUnavailable("publish timed out") from exc

    before = ambiguous()
    refusing = FakeBus()
    refusing.down = True  # refused up front: certainly not in the bus
    bus = SpoolBus(cfg(tmp_path / "a", stop_drain_ms=0), refusing)
    await bus.start()
    await bus.publish(batch(1))
    await bus.stop()
    assert ambiguous() == before
    bus = SpoolBus(cfg(tmp_path / "b", stop_drain_ms=0), TimesOut())
    await bus.start()
    await bus.publish(batch(2))
    await bus.stop()
    assert ambiguous() == before + batch(2).items


class _WatchedLock(asyncio.Lock):
    """An asyncio.Lock that tells when someone had to wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.contended = asyncio.Event()

    async def acquire(self) -> Literal[True]:
        if self.locked():
            self.contended.set()
        return await super().acquire()


async def test_a_cancelled_ledger_write_is_waited_out_before_the_next(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping cancels the periodic ledger write while its thread still runs; the close that
    follows writes the ledger again. The two must not overlap (they share the temporary file)."""
    spool = SpoolLog(tmp_path / "worker-0", writable=True, fsync=False, segment_bytes=1 << 20)
    spool.dir.mkdir(parents=True)
    lock = _WatchedLock()
    spool._ledger_lock = lock
    real = fmt.write_ledger
    started = asyncio.Event()
    release = threading.Event()
    loop = asyncio.get_running_loop()

    def held_write(directory: Path, acked: int, sync: bool = True) -> None:
        loop.call_soon_threadsafe(started.set)
        if acked == 5:
            release.wait(10)  # the thread outlives its cancelled caller until the next write queues
        real(directory, acked, sync)
        release.set()  # had the next write not waited, the stale one now lands last

    monkeypatch.setattr(fmt, "write_ledger", held_write)
    spool._acked_through = 5
    periodic = asyncio.create_task(spool.write_ledger())
    await asyncio.wait_for(started.wait(), 5)
    periodic.cancel()
    spool._acked_through = 7
    closing = asyncio.create_task(spool.write_ledger())
    await asyncio.wait_for(lock.contended.wait(), 5)  # the next write waits for the cancelled one
    release.set()
    await closing  # FileNotFoundError here when the two writes overlap
    with pytest.raises(asyncio.CancelledError):
        await periodic
    assert fmt.read_ledger(spool.dir) == 7


def test_a_bad_end_of_an_older_segment_is_corrupt_not_torn(tmp_path: Path) -> None:
    # A group is fsynced before the next one opens a new segment, so only the newest segment can
    # end in an interrupted write. A bad end of an older one is acknowledged data lost: it was
    # cut as a torn tail, counted nowhere an alert looks and not quarantined.
    frames = [fmt.encode(i, batch(i)) for i in range(1, 6)]
    older = write_segment(tmp_path, frames[:3])
    data = bytearray(older.read_bytes())
    data[len(frames[0]) + len(frames[1]) + 40] ^= 0xFF  # inside the older segment's last record
    older.write_bytes(bytes(data))
    (tmp_path / fmt.segment_name(4)).write_bytes(b"".join(frames[3:]))
    rec = fmt.recover(tmp_path)
    assert (rec.records, rec.corrupt, rec.torn_bytes) == (4, 1, 0)
    (bad,) = (tmp_path / fmt.QUARANTINE).iterdir()
    assert bad.read_bytes() == bytes(data[len(frames[0]) + len(frames[1]):])
    assert older.read_bytes() == b"".join(frames[:2])


def test_a_torn_newest_segment_after_older_ones_is_still_torn(tmp_path: Path) -> None:
    frames = [fmt.encode(i, batch(i)) for i in range(1, 6)]
    write_segment(tmp_path, frames[:3])
    newest = tmp_path / fmt.segment_name(4)
    newest.write_bytes(frames[3] + frames[4][: len(frames[4]) // 2])
    rec = fmt.recover(tmp_path)
    assert (rec.records, rec.corrupt, rec.torn_bytes) == (4, 0, len(frames[4]) // 2)
    assert not (tmp_path / fmt.QUARANTINE).exists()
