"""The spool's CRC-32C framing (format 2), and the upgrade from format 1 (zlib CRC-32).

Format 1 bytes come from ``tests/spool_format1.py``, written by hand from the layout the previous
version used (not with the module's code), so these tests keep proving that a spool left by that
version is replayed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import google_crc32c
import pytest

from bus.contract import Batch, BusRecord
from bus.memory import MemoryBus
from bus.spool import log as fmt
from bus.spool.bus import SpoolBus
from bus.spool.store import SpoolLog
from otlp.signals import Signal
from settings.config import SpoolConfig
from tests import spool_format1 as format1
from tests.waiting import await_for


def batch(n: int, signal: Signal = Signal.TRACES, tenant: str = "t1") -> Batch:
    return Batch(signal, tenant, f"{n:08d}".encode() * 12, items=n % 5 + 1, correlation_ids=[f"c{n}"])


def segment(directory: Path, first_seq: int, frames: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / fmt.segment_name(first_seq)
    path.write_bytes(b"".join(frames))
    return path


# -- the checksum -------------------------------------------------------------------------------

def test_crc32c_known_answer() -> None:
    # The check value of CRC-32C (RFC 3720 section B.4; the "CRC catalogue" entry CRC-32/ISCSI).
    assert fmt.crc32c(b"123456789") == 0xE3069283
    assert fmt.crc32c(b"56789", fmt.crc32c(b"1234")) == 0xE3069283  # continued in pieces
    assert fmt.crc32c(b"") == 0


def test_crc32c_runs_in_the_c_extension() -> None:
    # The pure-Python fallback is two orders of magnitude slower: the spool must not run on it.
    assert google_crc32c.implementation == "c"


def test_new_records_carry_the_crc32c_magic_and_checksum() -> None:
    frame = fmt.encode(7, batch(7), 1234)
    magic, length, crc = fmt.HEADER.unpack_from(frame)
    assert frame[:4] == b"GTSC" and magic == fmt.MAGIC
    assert length == len(frame) - fmt.HEADER.size
    assert crc == fmt.crc32c(frame[fmt.HEADER.size:])


# -- corruption -----------------------------------------------------------------------------------

_T_AT = fmt.HEADER.size + fmt.BODY.size  # the first tenant byte


@pytest.mark.parametrize(("where", "at"), [("magic", 0), ("length", 5), ("crc", 9), ("seq", 12),
                                           ("signal", 12 + 16), ("tenant", _T_AT), ("payload", -1)])
@pytest.mark.parametrize("version", [1, 2])
def test_a_flipped_byte_is_detected_in_either_format(where: str, at: int, version: int) -> None:
    frame = (format1.frame if version == 1 else fmt.encode)(1, batch(1), 1000)
    after = (format1.frame if version == 1 else fmt.encode)(2, batch(2), 1000)
    data = bytearray(frame + after)
    data[at % len(frame)] ^= 0x01
    found = list(fmt.parse(bytes(data)))
    assert [type(item) for _, item in found] == [fmt.Bad, fmt.Record], where
    bad, rec = found[0][1], found[1][1]
    assert isinstance(bad, fmt.Bad) and not bad.torn and bad.length == len(frame)
    assert isinstance(rec, fmt.Record) and rec.seq == 2 and rec.batch == batch(2)


def test_the_magic_chooses_the_checksum() -> None:
    """A record's checksum is checked by its own format's function only: a format 2 record
    relabelled as format 1 (or the reverse) fails."""
    new, old = fmt.encode(1, batch(1), 1000), format1.frame(1, batch(1), 1000)
    assert new[4:] != old[4:]  # same body, different checksums
    for relabelled in (old[:4] + new[4:], new[:4] + old[4:]):
        ((_, item),) = list(fmt.parse(relabelled))
        assert isinstance(item, fmt.Bad)


@pytest.mark.parametrize("version", [1, 2])
def test_a_scan_past_garbage_finds_the_next_record_of_either_format(version: int) -> None:
    """Garbage full of false magic hits of both formats, then one record: the scan skips the
    garbage as one bad span and finds the record."""
    garbage = b"GTSC\xff\xff\x00\x00" * 500 + b"GTSP\x10\x00\x00\x00" * 500
    frame = (format1.frame if version == 1 else fmt.encode)(9, batch(9), 1000)
    found = list(fmt.parse(garbage + frame))
    assert [(offset, type(item)) for offset, item in found] == [(0, fmt.Bad), (len(garbage), fmt.Record)]
    bad, rec = found[0][1], found[1][1]
    assert isinstance(bad, fmt.Bad) and not bad.torn and bad.length == len(garbage)
    assert isinstance(rec, fmt.Record) and rec.batch == batch(9)


# -- format 1 still read ---------------------------------------------------------------------------

def test_format_1_records_parse_to_the_same_batch() -> None:
    b = Batch(Signal.LOGS, "acme é", b"\x0a\x00payload", 3, ["a", "b"])
    ((_, rec),) = list(fmt.parse(format1.frame(42, b, 1234)))
    assert isinstance(rec, fmt.Record)
    assert (rec.seq, rec.appended_ms, rec.batch) == (42, 1234, b)


def test_format_1_ledger_is_read_and_rewritten_as_format_2(tmp_path: Path) -> None:
    (tmp_path / fmt.LEDGER).write_bytes(format1.ledger(77))
    assert fmt.read_ledger(tmp_path) == 77
    fmt.write_ledger(tmp_path, 78)
    raw = (tmp_path / fmt.LEDGER).read_bytes()
    assert len(raw) == 16 and raw[:4] == b"GTSL" and fmt.read_ledger(tmp_path) == 78
    for at in range(16):  # any flipped bit reads as "nothing acknowledged": replay more, never less
        bad = bytearray(raw)
        bad[at] ^= 0x10
        (tmp_path / fmt.LEDGER).write_bytes(bytes(bad))
        assert fmt.read_ledger(tmp_path) == 0, at
    bad = bytearray(format1.ledger(77))
    bad[3] ^= 0x10
    (tmp_path / fmt.LEDGER).write_bytes(bytes(bad))
    assert fmt.read_ledger(tmp_path) == 0


def cfg(tmp_path: Path) -> SpoolConfig:
    return SpoolConfig(mode="on_failure", dir=str(tmp_path / "spool"), min_free_bytes=0,
                       replay_max_bytes_per_s=0, stop_drain_ms=2000)


async def _truthy(value: bool) -> bool:
    return value


async def test_a_format_1_spool_is_replayed_after_the_upgrade(tmp_path: Path) -> None:
    """A spool the previous version left (format 1 segment with a corrupt record in it, and a
    format 1 ledger saying 1..4 were acknowledged) replays 5..12 but the corrupt 8, in order, to the
    bus below; then its files are gone and the ledger is format 2."""
    d = tmp_path / "spool" / "worker-0"
    frames = [format1.frame(i, batch(i, Signal.LOGS if i % 3 == 0 else Signal.TRACES)) for i in range(1, 13)]
    seg = segment(d, 1, frames)
    data = bytearray(seg.read_bytes())
    data[sum(map(len, frames[:7])) + 40] ^= 0xFF  # inside record 8's body
    seg.write_bytes(bytes(data))
    (d / fmt.LEDGER).write_bytes(format1.ledger(4))
    memory = MemoryBus()
    source = memory.source()
    bus = SpoolBus(cfg(tmp_path), memory)
    await bus.start()
    want = [i for i in range(5, 13) if i != 8]
    got: list[BusRecord] = []

    async def all_replayed() -> bool:
        got.extend(await source.getmany(50, 100))
        return sum(len(r.value) for r in got) >= sum(len(batch(i).payload) for i in want)

    await await_for(all_replayed, within=20, what="format 1 records replayed")
    for signal in (Signal.TRACES, Signal.LOGS):
        mine = b"".join(r.value for r in got if r.signal is signal)
        assert mine == b"".join(batch(i).payload for i in want
                                if (Signal.LOGS if i % 3 == 0 else Signal.TRACES) is signal)
    assert len(list((d / fmt.QUARANTINE).iterdir())) == 1
    await await_for(lambda: _truthy(not fmt.segments(d)), within=5, what="format 1 segment deleted")
    await bus.stop()
    ledger = (d / fmt.LEDGER).read_bytes()
    assert ledger[:4] == b"GTSL" and fmt.read_ledger(d) == 12
    # A restart resends nothing.
    memory2 = MemoryBus()
    bus2 = SpoolBus(cfg(tmp_path), memory2)
    await bus2.start()
    await bus2.stop()
    assert memory2.end_offset == 0


async def test_format_1_and_2_segments_in_one_directory_read_in_order(tmp_path: Path) -> None:
    """Format 1 segment (1..5), format 2 segment (6..10) and the format 1 ledger (2 acknowledged):
    the log reads 3..10, then what it appends after the upgrade (11..14, a new format 2 segment)."""
    d = tmp_path / "worker-0"
    old = segment(d, 1, [format1.frame(i, batch(i)) for i in range(1, 6)])
    mid = segment(d, 6, [fmt.encode(i, batch(i)) for i in range(6, 11)])
    (d / fmt.LEDGER).write_bytes(format1.ledger(2))
    spool = SpoolLog(d, writable=True, fsync=True, segment_bytes=1 << 20)
    assert spool.lock()
    rec = await spool.open()
    assert (rec.records, rec.acked, rec.next_seq, rec.corrupt, rec.torn_bytes) == (8, 2, 11, 0, 0)
    await asyncio.gather(*(spool.append(batch(i)) for i in range(11, 15)))
    new = [p for p in fmt.segments(d) if p not in (old, mid)]
    assert len(new) == 1 and new[0].read_bytes()[:4] == b"GTSC" and old.read_bytes()[:4] == b"GTSP"
    read: list[fmt.Record] = []
    while True:
        chunk = await spool.read(1 << 16)
        if not chunk:
            break
        read.extend(r for r, _ in chunk)
    assert [r.seq for r in read] == list(range(3, 15))
    assert [r.batch for r in read] == [batch(i) for i in range(3, 15)]
    for r in read:
        spool.ack(r)
    assert spool.records == 0 and not old.exists() and not mid.exists()
    await spool.close()
    assert (d / fmt.LEDGER).read_bytes()[:4] == b"GTSL" and fmt.read_ledger(d) == 14
