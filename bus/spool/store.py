"""One spool directory at run time: the group-committing writer, the reader and the acknowledgements.

``SpoolLog`` owns its directory by an flock (released by the kernel however the process dies).
A writable log appends; an adopted one (left by a worker that is gone) is only read and
emptied. Records become readable once the write of their group returned (after its fsync when
``fsync`` is on), and the client of a spooled batch is answered only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from bus.contract import Batch
from bus.metrics import (
    SPOOL_CORRUPT,
    SPOOL_FSYNC_SECONDS,
    SPOOL_GROUP_RECORDS,
    SPOOL_TORN_BYTES,
)
from bus.spool import log as fmt

log = logging.getLogger(__name__)


@dataclass
class _Segment:
    info: fmt.SegmentInfo
    acked: int = 0
    sealed: bool = True

    @property
    def done(self) -> bool:
        return self.sealed and self.acked >= self.info.records


class SpoolLog:
    """The segments of one directory, a write cursor (when writable) and a read cursor."""

    def __init__(self, directory: Path, *, writable: bool, fsync: bool = True,
                 segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.dir = directory
        self.writable = writable
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._segments: deque[_Segment] = deque()
        self._next_seq = 1
        self._acked_through = 0
        self._ledger_written = 0
        # One ledger write at a time: they share the temporary file the rename publishes.
        self._ledger_lock = asyncio.Lock()
        # read cursor: index into _segments and byte offset in it
        self._read_seg = 0
        self._read_off = 0
        # seq -> (segment, appended_ms) of records read and not yet acknowledged, in order
        self._inflight: OrderedDict[int, tuple[_Segment, int]] = OrderedDict()
        self._last_read_seq = 0
        # writer
        self._fd: int | None = None
        self._group: list[tuple[int, bytes, int, asyncio.Future[None]]] = []
        self._group_bytes = 0
        self._wake = asyncio.Event()
        self.readable = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._committing = False
        self.on_fsync: Callable[[float], None] | None = None  # also told each fsync's seconds
        self.recovered = 0
        self.bytes = 0  # framed bytes of unacknowledged records on disk (whole segments)
        self.records = 0  # unacknowledged records

    # -- lifecycle ----------------------------------------------------------------------------
    def lock(self) -> bool:
        fd = fmt.try_lock(self.dir)
        if fd is None:
            return False
        self._lock_fd = fd
        return True

    async def open(self) -> fmt.Recovery:
        """Recover the directory (it must be locked first) and start the writer."""
        if google_crc32c.implementation != "c":
            log.warning("spool %s: google-crc32c runs its pure Python fallback (no C extension for this "
                        "platform): checksums cost about 0.2 s of CPU per MiB spooled", self.dir)
        rec = await asyncio.to_thread(fmt.recover, self.dir)
        if rec.corrupt:
            SPOOL_CORRUPT.inc(rec.corrupt)
            log.error("spool %s: %d corrupt record(s) (%d bytes) quarantined to %s", self.dir, rec.corrupt,
                      rec.corrupt_bytes, self.dir / fmt.QUARANTINE)
        if rec.torn_bytes:
            SPOOL_TORN_BYTES.inc(rec.torn_bytes)
            log.warning("spool %s: cut a torn tail of %d bytes (a write the crash interrupted, never "
                        "acknowledged)", self.dir, rec.torn_bytes)
        for info in rec.segments:
            self._segments.append(_Segment(info))
        self._next_seq = rec.next_seq
        self._acked_through = self._ledger_written = rec.acked
        self._last_read_seq = rec.acked
        self.recovered = rec.records
        self.records = rec.records
        self.bytes = rec.bytes
        if rec.records:
            log.info("spool %s: %d record(s), %d bytes to replay", self.dir, rec.records, rec.bytes)
            self.readable.set()
        if self.writable:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="spool-flush")
        return rec

    async def close(self) -> None:
        """Write what was appended, the ledger, and let go of the directory."""
        if self._flusher is not None:
            while self._group:
                self._wake.set()
                await asyncio.sleep(0)
                if self._group:
                    await asyncio.sleep(0.001)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.write_ledger()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            fmt.unlock(self._lock_fd)
            self._lock_fd = None

    # -- state --------------------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        """Unacknowledged bytes on disk plus bytes waiting for the next group commit."""
        return self.bytes + self._group_bytes

    @property
    def backlog(self) -> bool:
        return bool(self.records or self._group or self._committing)

    def oldest_ms(self) -> int | None:
        """When the oldest unacknowledged record was appended (ms since the epoch), if any."""
        if self._inflight:
            return next(iter(self._inflight.values()))[1]
        for seg in self._segments:
            if seg.acked < seg.info.records:
                return seg.info.oldest_ms or None
        return None

    # -- writing ------------------------------------------------------------------------------
    def append(self, batch: Batch) -> asyncio.Future[None]:
        """Queue ``batch`` for the next group commit; the future settles once it is on disk.

        The sequence number is taken here, synchronously, so appends keep the callers' order.
        """
        assert self.writable and self._flusher is not None, "spool log not open for writing"
        seq = self._next_seq
        self._next_seq += 1
        ms = int(time.time() * 1000)
        frame = fmt.encode(seq, batch, ms)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.append((seq, frame, ms, fut))
        self._group_bytes += len(frame)
        self._wake.set()
        return fut

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._group:
                group, self._group = self._group, []
                size = sum(len(f) for _, f, _, _ in group)
                self._committing = True
                try:
                    await self._commit(group, size)
                except OSError as exc:
                    log.error("spool %s: write failed: %s", self.dir, exc)
                    for *_, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                finally:
                    self._group_bytes -= size
                    self._committing = False

    async def _commit(self, group: list[tuple[int, bytes, int, asyncio.Future[None]]], size: int) -> None:
        active = self._segments[-1] if self._segments and not self._segments[-1].sealed else None
        if active is None or active.info.size >= self._segment_bytes:
            if active is not None:
                active.sealed = True
            info = fmt.SegmentInfo(self.dir / fmt.segment_name(group[0][0]), group[0][0])
            active = _Segment(info, sealed=False)
            new_file = True
        else:
            new_file = False
        data = b"".join(f for _, f, _, _ in group)
        took = await asyncio.to_thread(self._write, active.info.path, new_file, data, active.info.size)
        if new_file:
            self._segments.append(active)
        if self._fsync:
            SPOOL_FSYNC_SECONDS.observe(took)
            if self.on_fsync is not None:
                self.on_fsync(took)
        SPOOL_GROUP_RECORDS.observe(len(group))
        info = active.info
        if not info.oldest_ms:
            info.oldest_ms = group[0][2]
        info.size += size
        info.records += len(group)
        info.last_seq = group[-1][0]
        self.bytes += size
        self.records += len(group)
        for *_, fut in group:
            if not fut.done():
                fut.set_result(None)
        self.readable.set()

    def _write(self, path: Path, new_file: bool, data: bytes, expected_size: int) -> float:
        """In a thread: append ``data`` to ``path`` and fsync; returns the fsync's seconds."""
        if new_file:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if self._fsync:
                fmt.fsync_dir(self.dir)
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            # Leave no half group behind: the next group starts where this one would have.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, expected_size)
            raise
        if not self._fsync:
            return 0.0
        started = time.perf_counter()
        os.fdatasync(self._fd)
        return time.perf_counter() - started

    # -- reading and acknowledging --------------------------------------------------------------
    def unread(self) -> bool:
        while self._read_seg < len(self._segments):
            seg = self._segments[self._read_seg]
            if self._read_off < seg.info.size:
                return True
            if not seg.sealed:
                return False
            self._read_seg += 1
            self._read_off = 0
            self._release()
        return False

    async def read(self, budget: int) -> list[tuple[fmt.Record, object]]:
        """The next records in order (about ``budget`` bytes), each with the token to ``ack`` it."""
        if not self.unread():
            self.readable.clear()
            return []
        seg = self._segments[self._read_seg]
        path, end = seg.info.path, seg.info.size
        records, pos, bad = await asyncio.to_thread(fmt.read_records, path, self._read_off, end, budget)
        # The segment may have been compacted meanwhile only by recovery, never at run time, so
        # the cursor and the segment are still the ones read.
        for b in bad:
            if b.torn and pos >= end:
                continue
            SPOOL_CORRUPT.inc()
            log.error("spool %s: corrupt record at %s:%d (%d bytes) skipped", self.dir, path.name, b.offset,
                      b.length)
        self._read_off = pos
        out: list[tuple[fmt.Record, object]] = []
        for rec in records:
            if rec.seq <= self._acked_through:
                continue  # acknowledged before a restart (the ledger says so)
            self._inflight[rec.seq] = (seg, rec.appended_ms)
            self._last_read_seq = max(self._last_read_seq, rec.seq)
            out.append((rec, seg))
        if not out and pos >= end and bad:
            # Only bad bytes at the end of what is durable: they can never become a record.
            self._skip_rest(seg, end)
        return out

    def _skip_rest(self, seg: _Segment, end: int) -> None:
        self._read_off = end

    def ack(self, rec: fmt.Record) -> None:
        """``rec`` is in the bus below: forget it; delete segments wholly acknowledged."""
        entry = self._inflight.pop(rec.seq, None)
        if entry is None:
            return
        seg = entry[0]
        seg.acked += 1
        self.records -= 1
        self._acked_through = (next(iter(self._inflight)) - 1) if self._inflight else self._last_read_seq
        self._release()

    def _release(self) -> None:
        """Delete leading segments every record of which was acknowledged and read past."""
        while self._segments and self._read_seg > 0:
            seg = self._segments[0]
            if not seg.done:
                break
            self._segments.popleft()
            self._read_seg -= 1
            self.bytes -= seg.info.size
            with contextlib.suppress(FileNotFoundError):
                seg.info.path.unlink()
        # The active segment when all of it is acknowledged and it has grown: roll past it so
        # it can go too (the ledger keeps a restart from resending what it still holds).
        if (self.writable and len(self._segments) == 1 and not self._group and not self._committing
                and not self._inflight
                and self._segments[0].acked >= self._segments[0].info.records
                and self._segments[0].info.size >= min(self._segment_bytes, 1024 * 1024)):
            self._segments[0].sealed = True
            self._read_seg = 1
            self._read_off = 0
            self._release()

    def drop_empty_tail(self) -> None:
        """For an adopted directory once drained: nothing left, remove its files."""
        for seg in list(self._segments):
            with contextlib.suppress(FileNotFoundError):
                seg.info.path.unlink()
        self._segments.clear()
        self.bytes = 0

    async def write_ledger(self) -> None:
        """Persist how far acknowledgements reached, so a restart does not resend it.

        Writes are serialised, also across cancellation: cancelling the caller does not stop
        the thread that writes, so a cancelled write is waited out before the next may start
        (two at once would rename each other's temporary file away: FileNotFoundError).
        """
        async with self._ledger_lock:
            acked = self._acked_through
            if acked == self._ledger_written:
                return
            write = asyncio.ensure_future(asyncio.to_thread(fmt.write_ledger, self.dir, acked, self._fsync))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await write
                raise
            self._ledger_written = acked


def claim(base: Path, *, fsync: bool, segment_bytes: int) -> tuple[SpoolLog, list[SpoolLog]]:
    """This process's own directory under ``base`` (the first ``worker-<n>`` it can lock, created
    if need be) and every other one nobody holds (left by a worker that is gone: adopted)."""
    base.mkdir(parents=True, exist_ok=True)
    own: SpoolLog | None = None
    n = 0
    while own is None:
        candidate = SpoolLog(base / f"worker-{n}", writable=True, fsync=fsync, segment_bytes=segment_bytes)
        if candidate.lock():
            own = candidate
        n += 1
    adopted: list[SpoolLog] = []
    for d in sorted(p for p in base.glob("worker-*") if p.is_dir() and p != own.dir):
        if not fmt.segments(d):
            continue
        other = SpoolLog(d, writable=False, fsync=fsync, segment_bytes=segment_bytes)
        if other.lock():
            adopted.append(other)
    return own, adopted


def disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
