"""The spool's on-disk log: append-only segment files of framed, checksummed records.

Layout of one spool directory (one per gateway worker)::

    <dir>/LOCK                          flock'ed by the process that owns the directory
    <dir>/ledger                        "acked through" sequence number (16 bytes, see below), by rename
    <dir>/seg-<first seq, 20 digits>.log   records, in sequence order
    <dir>/quarantine/<segment>-<offset>.bad  bytes of a record that failed its checksum

A record (little-endian)::

    magic u32 | length u32 | crc u32 | body[length]
    body = seq u64 | appended_ms u64 | signal u8 | items u32 | tenant_len u16 | headers_len u32
           | tenant | headers (correlation ids, comma-joined) | payload (OTLP protobuf)

``crc`` is CRC-32C (Castagnoli, RFC 3720 section B.4: the checksum of Kafka's record batches,
ext4 metadata and Vector's disk buffer; it catches more error patterns than CRC-32 and runs in
hardware, SSE4.2 / ARMv8, through ``google-crc32c``) of the body. The magic versions the format:

    ``MAGIC``        0x43535447, bytes "GTSC"   format 2, CRC-32C: every record written
    ``MAGIC_CRC32``  0x50535447, bytes "GTSP"   format 1, CRC-32 (zlib, IEEE): read only

so a spool the previous version left (format 1 segments and ledger) is recovered and replayed
after an upgrade. A started log appends to a new segment, so a segment holds one format (a scan
checks each record by its own magic anyway). The previous version would take format 2 records
for a torn tail and cut them: drain a spool before downgrading. The magic lets a scan find the
next record after a corrupt one; the checksum covers the sequence number, so a stale record
cannot pass for a newer one.

The ledger, format 2: ``magic u32 (bytes "GTSL") | acked u64 | crc32c(magic, acked) u32``; the
12-byte format 1 ledger ``acked u64 | crc32(acked) u32`` is still read.

As in Vector's disk buffer (``disk_v2``), a record is only readable once the group commit that
wrote it has been fsynced, and a segment file is deleted only after every record in it was
acknowledged downstream; the ledger plays the part of Vector's ledger and of the Collector
persistent queue's read index, so a restart does not resend what was acknowledged before the
last ledger write.

Recovery (``scan``) never raises on bad content: in the newest segment, a record whose length
runs past the end of the file, or which fails its checksum with no valid record after it, is a
torn tail and is cut off (it was never acknowledged: its fsync had not completed); any other
bad record (one with valid ones after it, or the bad end of an older segment, which was
fsynced before the next segment began) is corrupt, its bytes are copied to ``quarantine/``,
counted, and skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from bus.contract import Batch
from otlp.signals import Signal

MAGIC = 0x43535447  # bytes "GTSC": format 2, CRC-32C; every record written has it
MAGIC_CRC32 = 0x50535447  # bytes "GTSP": format 1 (before CRC-32C), zlib CRC-32; read only
_MAGICS = (MAGIC, MAGIC_CRC32)
HEADER = struct.Struct("<III")  # magic, body length, checksum(body)
BODY = struct.Struct("<QQBIHI")  # seq, appended_ms, signal, items, tenant_len, headers_len
MAX_RECORD_BYTES = 256 * 1024 * 1024
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".log"
LEDGER = "ledger"
LOCK = "LOCK"
QUARANTINE = "quarantine"
LEDGER_MAGIC = 0x4C535447  # bytes "GTSL": ledger format 2, CRC-32C
_LEDGER = struct.Struct("<IQI")  # magic, acked, crc32c of the 12 bytes before it
_LEDGER_CRC32 = struct.Struct("<QI")  # format 1: acked, zlib crc32 of the 8 bytes before it

_SIGNAL_CODES = {Signal.TRACES: 1, Signal.LOGS: 2, Signal.METRICS: 3}
_CODE_SIGNALS = {v: k for k, v in _SIGNAL_CODES.items()}


@dataclass(slots=True)
class Record:
    """One spooled batch and where it lies."""

    seq: int
    appended_ms: int
    batch: Batch
    size: int  # framed bytes on disk


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli; RFC 3720 section B.4) of ``data`` as an unsigned 32-bit int, continuing
    ``crc`` (the value of the bytes before ``data``). ``data`` must be ``bytes`` (the C extension
    takes no memoryview)."""
    return int(google_crc32c.extend(crc, data))


def _checksum(magic: int, head: bytes, payload: bytes) -> int:
    """The checksum format ``magic`` uses, of ``head + payload`` (taken in two pieces so that
    neither encoding nor decoding copies the payload only to checksum it)."""
    if magic == MAGIC:
        return crc32c(payload, crc32c(head))
    return zlib.crc32(payload, zlib.crc32(head))


def encode(seq: int, batch: Batch, appended_ms: int | None = None) -> bytes:
    """The framed bytes of one record (format 2: ``MAGIC``, CRC-32C)."""
    tenant = batch.tenant.encode()
    headers = ",".join(batch.correlation_ids).encode()
    ms = int(time.time() * 1000) if appended_ms is None else appended_ms
    head = b"".join((BODY.pack(seq, ms, _SIGNAL_CODES[batch.signal], batch.items, len(tenant), len(headers)),
                     tenant, headers))
    length = len(head) + len(batch.payload)
    return b"".join((HEADER.pack(MAGIC, length, _checksum(MAGIC, head, batch.payload)), head, batch.payload))


def _decode_body(magic: int, crc: int, body: memoryview, size: int) -> Record | None:
    """The record whose body is ``body``, or None if its fields do not fit or its checksum fails."""
    if len(body) < BODY.size:
        return None
    seq, ms, code, items, tlen, hlen = BODY.unpack_from(body)
    signal = _CODE_SIGNALS.get(code)
    start = BODY.size
    if signal is None or start + tlen + hlen > len(body):
        return None
    # The payload is copied out for the Batch anyway: checksum that copy, not a second one.
    head = bytes(body[:start + tlen + hlen])
    payload = bytes(body[start + tlen + hlen:])
    if _checksum(magic, head, payload) != crc:
        return None
    tenant = head[start:start + tlen].decode(errors="replace")
    headers = head[start + tlen:].decode(errors="replace")
    cids = [c for c in headers.split(",") if c]
    return Record(seq, ms, Batch(signal, tenant, payload, items, cids), size)


@dataclass(slots=True)
class Bad:
    """A span of a segment that is not a valid record."""

    offset: int
    length: int
    torn: bool  # nothing valid after it: a tail cut by a crash, not a corruption


def parse(buf: bytes | memoryview, base: int = 0, final: bool = True) -> Iterator[tuple[int, Record | Bad]]:
    """(offset, record or bad span) for the records in ``buf`` (which starts at file offset ``base``).

    With ``final`` false, an incomplete last record ends the iteration silently (the caller
    reads more later); with ``final`` true it is reported as a torn ``Bad`` span.
    """
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        rec = _record_at(view, pos)
        if isinstance(rec, Record):
            yield base + pos, rec
            pos += rec.size
            continue
        if rec == "short" and not final:
            return
        nxt = _next_valid(view, pos + 1)
        if nxt is None:
            if final or rec != "short":
                yield base + pos, Bad(base + pos, end - pos, torn=True)
            return
        yield base + pos, Bad(base + pos, nxt - pos, torn=False)
        pos = nxt


def _record_at(view: memoryview, pos: int) -> Record | str:
    """The record at ``pos``, or why not: "short" (runs past the buffer) or "bad"."""
    if pos + HEADER.size > len(view):
        return "short"
    magic, length, crc = HEADER.unpack_from(view, pos)
    if magic not in _MAGICS or length < BODY.size or length > MAX_RECORD_BYTES:
        return "bad"
    stop = pos + HEADER.size + length
    if stop > len(view):
        return "short"
    rec = _decode_body(magic, crc, view[pos + HEADER.size:stop], HEADER.size + length)
    return rec if rec is not None else "bad"


_MAGIC_BYTES = tuple(struct.pack("<I", m) for m in _MAGICS)


def _next_valid(view: memoryview, start: int) -> int | None:
    """The offset of the next whole valid record (of either format) at or after ``start``."""
    data = view.obj if isinstance(view.obj, bytes) and len(view.obj) == len(view) else bytes(view)
    # The next hit of each magic, searched again only once passed, so a long run of one magic's
    # false hits does not rescan the rest of the buffer for the other each time.
    hits = [data.find(m, start) for m in _MAGIC_BYTES]
    while True:
        found = [at for at in hits if at >= 0]
        if not found:
            return None
        pos = min(found)
        if isinstance(_record_at(view, pos), Record):
            return pos
        hits = [data.find(m, pos + 1) if at == pos else at for m, at in zip(_MAGIC_BYTES, hits, strict=True)]


# -- files --------------------------------------------------------------------------------------

def segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:020d}{SEGMENT_SUFFIX}"


def segments(directory: Path) -> list[Path]:
    """The segment files of a spool directory, oldest first."""
    return sorted(p for p in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}") if p.is_file())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(directory: Path) -> int:
    """The sequence number every record up to which was acknowledged (0: none), from a format 2
    (16 bytes, CRC-32C) or format 1 (12 bytes, CRC-32) ledger; a bad ledger reads 0, which only
    means replaying more."""
    try:
        raw = (directory / LEDGER).read_bytes()
    except FileNotFoundError:
        return 0
    if len(raw) == _LEDGER.size:
        magic, acked, crc = _LEDGER.unpack(raw)
        return acked if magic == LEDGER_MAGIC and crc32c(raw[:12]) == crc else 0
    if len(raw) == _LEDGER_CRC32.size:
        acked, crc = _LEDGER_CRC32.unpack(raw)
        return acked if zlib.crc32(raw[:8]) == crc else 0
    return 0


def write_ledger(directory: Path, acked: int, sync: bool = True) -> None:
    """Replace the ledger (format 2) by one saying ``acked``, atomically by rename."""
    head = struct.pack("<IQ", LEDGER_MAGIC, acked)
    tmp = directory / f".{LEDGER}.tmp"
    with open(tmp, "wb") as f:
        f.write(head + struct.pack("<I", crc32c(head)))
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, directory / LEDGER)
    if sync:
        fsync_dir(directory)


def try_lock(directory: Path) -> int | None:
    """An fd holding an exclusive flock on the directory's LOCK file, or None if another process
    holds it. The kernel releases it when the process dies, however it dies."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


# -- recovery -----------------------------------------------------------------------------------

@dataclass
class SegmentInfo:
    path: Path
    first_seq: int
    size: int = 0
    records: int = 0
    last_seq: int = 0
    oldest_ms: int = 0


@dataclass
class Recovery:
    """What a scan of a directory found and did."""

    segments: list[SegmentInfo]
    next_seq: int
    acked: int
    records: int = 0  # records left to replay (after the ledger)
    bytes: int = 0
    corrupt: int = 0  # records quarantined
    corrupt_bytes: int = 0
    torn_bytes: int = 0  # bytes cut from torn tails


def recover(directory: Path, repair: bool = True) -> Recovery:
    """Scan every segment: cut torn tails, quarantine corrupt records (rewriting the segment
    without them), drop segments wholly acknowledged, and say what is left to replay.

    With ``repair`` false nothing is changed on disk (``spool inspect``).
    """
    acked = read_ledger(directory)
    out = Recovery([], next_seq=acked + 1, acked=acked)
    paths = segments(directory)
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        info = SegmentInfo(path, _first_seq(path))
        keep: list[tuple[int, int]] = []  # (offset, length) of valid spans, to rewrite if needed
        bad_seen = False
        # Only the newest segment can end in a write a crash interrupted: a group is fsynced
        # before the next one starts a new segment, so the bad end of an older one was
        # acknowledged, and is corrupt.
        last = path == paths[-1]
        for offset, item in parse(data):
            if isinstance(item, Bad):
                if item.torn and last:
                    out.torn_bytes += item.length
                else:
                    out.corrupt += 1
                    out.corrupt_bytes += item.length
                    if repair:
                        _quarantine(directory, path, item.offset, data[item.offset:item.offset + item.length])
                bad_seen = True
                continue
            keep.append((offset, item.size))
            out.next_seq = max(out.next_seq, item.seq + 1)
            if item.seq <= acked:
                continue
            info.records += 1
            info.last_seq = item.seq
            if not info.oldest_ms:
                info.oldest_ms = item.appended_ms
        info.size = sum(n for _, n in keep)
        if repair and bad_seen:
            _rewrite(path, data, keep)
        if info.records == 0:
            if repair:
                path.unlink(missing_ok=True)
            continue
        out.segments.append(info)
        out.records += info.records
        out.bytes += info.size
    if repair:
        fsync_dir(directory)
    return out


def _first_seq(path: Path) -> int:
    try:
        return int(path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)])
    except ValueError:
        return 0


def _quarantine(directory: Path, segment: Path, offset: int, data: bytes) -> None:
    qdir = directory / QUARANTINE
    qdir.mkdir(exist_ok=True)
    (qdir / f"{segment.stem}-{offset}.bad").write_bytes(data)


def _rewrite(path: Path, data: bytes, keep: list[tuple[int, int]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for offset, length in keep:
            f.write(data[offset:offset + length])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_records(path: Path, start: int, end: int, budget: int) -> tuple[list[Record], int, list[Bad]]:
    """Records of ``path`` from byte ``start`` up to at most ``end``, about ``budget`` bytes of them
    (at least one whole record when one is there). Returns the records, the offset after the last
    span consumed, and the bad spans skipped."""
    with open(path, "rb") as f:
        f.seek(start)
        want = min(end - start, max(budget, HEADER.size))
        buf = f.read(want)
        if len(buf) >= HEADER.size:
            magic, length, _ = HEADER.unpack_from(buf)
            need = HEADER.size + length
            if magic in _MAGICS and need <= end - start and need > len(buf) and length <= MAX_RECORD_BYTES:
                buf += f.read(need - len(buf))
    records: list[Record] = []
    bad: list[Bad] = []
    pos = start
    final = start + len(buf) >= end
    for offset, item in parse(buf, start, final=final):
        if isinstance(item, Bad):
            bad.append(item)
            pos = offset + item.length
        else:
            records.append(item)
            pos = offset + item.size
    return records, pos, bad
