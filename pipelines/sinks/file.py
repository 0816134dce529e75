"""File sink for the embedded default: OTLP/JSON lines under ``<data_dir>/<tenant dir>/``.

One line per consumed record (a whole Export request, as OTLP/JSON), so the files can be read
back with any OTLP/JSON tool or replayed with ``curl --data-binary`` line by line. Each record's
lines are handed to the OS before ``write`` returns, which is when the pipeline commits.

Turning protobuf into JSON is done in C straight from the wire bytes (``otlp/proto_json.py``:
about 1 ms of CPU for a 512-span request, 13 ms in Python before). With ``offload=True`` (the
embedded gateway) it runs in a thread of its own with the GIL released, so the receivers' event
loop stays free for clients and the conversion uses the other core. The few records the C writer
leaves to the Python reference (a field set twice, a repeated field split by others, invalid
UTF-8: see ``otlp/_otlpjson.c``; counted per record in
``pipeline_file_sink_json_fallback_records_total``) go to one helper process, started when the
first such record comes: the reference can take a hostile record's time and memory, and the
helper only converts while this process appends. So a helper that dies (killed, crashed on
some input) has written nothing: the sink starts a new one and converts the same records again,
and no line is ever written twice. The helper is spawned, not forked, because the gateway
process runs grpc threads; it is spawned with SIGINT and SIGTERM blocked, and ignores them from
its first instruction on, so a Ctrl-C or a service manager signalling the whole process group or
cgroup leaves shutdown to the gateway.

With ``format="proto"`` (the Collector file exporter's ``format: proto``) nothing is converted:
each record is appended to ``<signal><suffix>.binpb`` as the Collector writes it, a 4-byte
big-endian length and then the Export request's protobuf bytes (the same bytes as a
TracesData, LogsData or MetricsData message).

A record that is framed correctly but does not convert (a span name that is not UTF-8 passes the
ingest checks, which only look at the framing; or the converter fails in any other way) is
converted again per ResourceX: the batcher joins several acknowledged requests into one record,
so one bad part must not cost the others. What still fails goes to
``<tenant dir>/rejected/<signal><suffix>.jsonl``, with its coordinates, the error and the bytes,
because the embedded pipeline has no dead-letter topic to park it in. A directory of its own
keeps readers that glob ``<tenant dir>/<signal>*.jsonl`` on the data alone.

Each record is appended all or nothing: on an I/O error the files it touched are cut back to
where they were and ``write`` raises TransientSinkError naming the records written before it,
so the pipeline's retry sends only the rest.

Not idempotent under redelivery: a record redelivered after a crash between write and commit
is appended again. The memory bus does not outlive the process, so in the embedded setup that
window only exists for Kafka sources, where the Elasticsearch sink is the idempotent choice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import multiprocessing
import os
import signal
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import BinaryIO, Literal

import orjson

from bus.contract import BusRecord
from otlp.json_mapping import proto_to_json as reference_proto_to_json
from otlp.proto_json import fast_proto_to_json, proto_to_json
from otlp.signals import Signal
from otlp.wire import WireError, top_level_fields
from pipelines.metrics import FILE_HELPER_RESTARTS, FILE_JSON_FALLBACK_RECORDS, FILE_REJECTED_PARTS
from pipelines.sinks.base import Rejection, TransientSinkError
from settings.config import Config

log = logging.getLogger(__name__)

_REJECTS_DIR = "rejected"
FileFormat = Literal["json", "proto"]
# File name endings by format: JSON lines; protobuf messages, each after its length.
_EXTENSIONS: dict[str, str] = {"json": ".jsonl", "proto": ".binpb"}
_LENGTH = struct.Struct(">I")  # as the Collector's file exporter frames each message
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# Bytes kept as they are in a tenant's directory name: lower-case letters only, so two tenants
# never share a directory on a case-insensitive filesystem either.
_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.")
_EMPTY_TENANT_DIR = "%"  # no encoding produces a lone "%": it is the empty tenant's alone

# What crosses to the helper per record: (signal value, protobuf bytes).
_Item = tuple[str, bytes]
# What comes back per record: the data line with its newline (None when no part converts) and the
# parts that do not convert, each with the reason.
_Converted = tuple[bytes | None, list[tuple[bytes, str]]]

# Counted here, not in the helper process: only the sink's own process serves /metrics.


class HelperDied(RuntimeError):
    """The conversion helper died while converting these records, and again after a restart.

    Nothing was written. The pipeline treats this like any unexpected sink error: it retries a
    few times, then converts the records one by one, so only a record that kills every helper
    is set aside.
    """


def safe_name(tenant: str) -> str:
    """The directory name of a tenant: one-to-one, reversible, never outside ``data_dir``.

    Bytes of the UTF-8 tenant other than ``[a-z0-9_.-]`` (upper-case letters included, for
    case-insensitive filesystems), and a leading dot, become ``%XX`` (upper-case hex); the
    empty tenant is ``%``. So ``acme`` stays ``acme``, ``.x`` is ``%2Ex``, ``a/b`` is ``a%2Fb``
    and ``Acme`` is ``%41cme``; ``tenant_of`` maps a name back.
    """
    if not tenant:
        return _EMPTY_TENANT_DIR
    raw = tenant.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if b in _KEEP and (i or b != ord(".")) else f"%{b:02X}"
                   for i, b in enumerate(raw))


def tenant_of(name: str) -> str:
    """The tenant whose directory is ``name`` (the inverse of ``safe_name``)."""
    if name == _EMPTY_TENANT_DIR:
        return ""
    return urllib.parse.unquote_to_bytes(name).decode("utf-8", "surrogatepass")


def _path(data_dir: Path, tenant: str, signal_name: str, suffix: str, subdir: str = "",
          ext: str = ".jsonl") -> Path:
    return data_dir / safe_name(tenant) / subdir / f"{signal_name}{suffix}{ext}"


def complete_lines(path: Path) -> Iterator[bytes]:
    """The lines of a sink file that are whole: a reader may look while a line is being written,
    and a line without its newline is not delivered yet."""
    # One read, cut at the last newline: iterating the file instead would, after reaching an end
    # that was mid-line, go on reading once the writer had appended, and yield the rest of that
    # line as a line of its own.
    data = path.read_bytes()
    for line in data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]:
        yield line + b"\n"


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"


def _salvage(signal: Signal, value: bytes, error: str) -> _Converted:
    """For a record that does not convert: the JSON line of the parts that do (None if none),
    and (part, reason) for each part that does not."""
    try:
        parts = top_level_fields(value)
    except Exception:  # not even framed as fields: the record is one part
        return None, [(value, error)]
    good: list[bytes] = []
    bad: list[tuple[bytes, str]] = []
    for part in parts:
        try:
            proto_to_json(signal, part)
        except Exception as exc:  # any converter failure, not only WireError: see the module doc
            bad.append((part, _describe(exc)))
        else:
            good.append(part)
    if not good:
        return None, bad
    try:
        return proto_to_json(signal, b"".join(good), b"\n"), bad
    except Exception:  # parts that convert alone should convert together; if not, keep it all
        return None, [(value, error)]


def convert(items: Sequence[_Item]) -> list[_Converted]:
    """Convert each (signal, protobuf) to its OTLP/JSON line (newline included) and its
    unconvertible parts, with the Python reference: the items are those the C writer handed back
    (``fast_lines``), so it is not asked again.

    Pure (no I/O), never raises for any content: runs in the helper or in-process.
    """
    out: list[_Converted] = []
    for signal_name, value in items:
        sig = Signal(signal_name)
        try:
            out.append((reference_proto_to_json(sig, value) + b"\n", []))
        except Exception as exc:
            out.append(_salvage(sig, value, _describe(exc)))
    return out


def fast_lines(items: Sequence[_Item]) -> list[bytes | None]:
    """The C writer's OTLP/JSON line (newline included) of each (signal, protobuf), None where only
    the reference can say (``convert`` then). Releases the GIL while it converts; raises nothing
    for any content."""
    return [fast_proto_to_json(Signal(signal_name), value, b"\n") for signal_name, value in items]


def _reject_line(rec: BusRecord, reason: str, payload: bytes) -> bytes:
    return orjson.dumps({"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                         "error": reason, "payload": base64.b64encode(payload).decode()}) + b"\n"


def read_frames(path: Path) -> Iterator[bytes]:
    """The whole protobuf messages of a ``format="proto"`` sink file, in order: a message whose
    bytes are not all written yet is not delivered yet."""
    messages, _ = whole_frames(path.read_bytes())
    yield from messages


def whole_frames(data: bytes) -> tuple[list[bytes], int]:
    """The messages framed whole at the start of ``data`` (each a 4-byte big-endian length, then
    that many bytes: the ``format="proto"`` framing) and the bytes they take, so a reader that
    looked while a message was being appended resumes at that offset."""
    out: list[bytes] = []
    pos = 0
    while pos + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, pos)
        if pos + _LENGTH.size + size > len(data):
            break
        out.append(data[pos + _LENGTH.size:pos + _LENGTH.size + size])
        pos += _LENGTH.size + size
    return out, pos


class RecordWriter:
    """Appends whole records to the sink's files, all or nothing per record: data files end in
    ``ext``, rejects files are always JSON lines."""

    def __init__(self, data_dir: str | Path, suffix: str, ext: str = ".jsonl") -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._ext = ext
        self._files: dict[Path, BinaryIO] = {}

    def _file(self, tenant: str, signal_name: str, subdir: str = "") -> BinaryIO:
        p = _path(self.data_dir, tenant, signal_name, self._suffix, subdir, ".jsonl" if subdir else self._ext)
        f = self._files.get(p)
        if f is None:
            p.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each write goes to the OS at once, so what this process holds back is
            # never half a record, and "written" means the OS has it.
            f = self._files[p] = p.open("ab", buffering=0)
        return f

    def append(self, rec: BusRecord, data: bytes | None, rejects: Sequence[tuple[bytes, str]]) -> None:
        """Append ``rec``'s data (a line with its newline, or a length-prefixed message) and its
        reject lines, or none of them.

        Raises OSError after cutting every file it touched back to its size before the call.
        """
        out: list[tuple[BinaryIO, bytes]] = []
        if rejects:
            rejected = b"".join(_reject_line(rec, reason, part) for part, reason in rejects)
            out.append((self._file(rec.tenant, rec.signal.value, _REJECTS_DIR), rejected))
        if data is not None:
            out.append((self._file(rec.tenant, rec.signal.value), data))
        marks: list[tuple[BinaryIO, int]] = []
        try:
            for f, data in out:
                marks.append((f, os.fstat(f.fileno()).st_size))
                view = memoryview(data)
                while view:  # a regular file may take less than asked (a disk filling up)
                    view = view[f.write(view) or 0:]
        except OSError:
            for f, size in marks:
                with contextlib.suppress(OSError):  # nothing more to do if even that fails
                    f.truncate(size)
            raise

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


# --- the helper process's side ----------------------------------------------------------------


def _helper_init(parent: int) -> None:
    """Runs once in the helper: it stops when its parent shuts the pool down, not on signals.

    It was spawned with SIGINT/SIGTERM blocked (inherited across exec), so none could kill it
    before this line; ignoring them also drops any that arrived meanwhile.
    """
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    # Ignoring SIGTERM means a gateway killed outright would leave this process behind.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _helper_ready() -> int:
    return os.getpid()


class FileSink:
    """Appends OTLP/JSON lines to ``<data_dir>/<safe_name(tenant)>/<signal><suffix>.jsonl``, or with
    ``file_format="proto"`` length-prefixed protobuf messages to ``<signal><suffix>.binpb``.

    ``suffix`` keeps writers of one data dir apart (``--workers N`` gives each worker its own
    memory bus and file sink, so each writes its own files, e.g. ``traces-w1.jsonl``).
    """

    name = "file"
    signals = frozenset(Signal)

    def __init__(self, data_dir: str | Path, suffix: str = "", *, offload: bool = False,
                 file_format: FileFormat = "json") -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._offload = offload
        self._format = file_format
        self.extension = _EXTENSIONS[file_format]
        self._writer = RecordWriter(self.data_dir, suffix, self.extension)
        self._pool: ProcessPoolExecutor | None = None
        # One thread: records convert in order, and at most one batch of JSON is held at a time.
        self._thread: ThreadPoolExecutor | None = None
        self.helper_pid: int | None = None  # None until a record needs the reference converter

    def path(self, tenant: str, signal: Signal) -> Path:
        return _path(self.data_dir, tenant, signal.value, self._suffix, ext=self.extension)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._offload and self._format == "json":
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="file-sink-json")

    async def _start_helper(self) -> None:
        """Spawn the helper and wait until it runs: the pool would spawn on its first submit, from
        its own thread, without the signal mask this thread sets around the spawn."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # inherited by the child
        try:
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_helper_init, initargs=(os.getpid(),))
            ready = pool.submit(_helper_ready)  # spawns the process, in this thread
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._pool = pool
        self.helper_pid = await asyncio.wrap_future(ready)

    async def stop(self) -> None:
        self._writer.close()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=False)  # idle: stop runs after the last write returned
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    async def _convert(self, items: list[_Item]) -> list[_Converted]:
        """Convert with the C writer (in its thread when offloading), and what it hands back with
        the Python reference (in the helper when offloading), counting those records."""
        if self._thread is None:
            lines = fast_lines(items)
        else:
            lines = await asyncio.get_running_loop().run_in_executor(self._thread, fast_lines, items)
        out: list[_Converted] = [(line, []) for line in lines]
        left = [i for i, line in enumerate(lines) if line is None]
        if left:
            # Counted here, once per record, in the process whose metrics are served: the helper's
            # own counters would not be, and the reference also runs there per part (_salvage).
            for i in left:
                FILE_JSON_FALLBACK_RECORDS.labels(items[i][0]).inc()
            rest = [items[i] for i in left]
            done = convert(rest) if self._thread is None else await self._convert_in_helper(rest)
            for i, converted in zip(left, done, strict=True):
                out[i] = converted
        return out

    async def _convert_in_helper(self, items: list[_Item]) -> list[_Converted]:
        """Convert in the helper; start a new one if it died, once per call (see HelperDied)."""
        for attempt in range(2):
            if self._pool is None:
                try:
                    await self._start_helper()
                except (OSError, BrokenProcessPool) as exc:
                    log.error("file sink: cannot start a conversion helper (%s); converting in-process", exc)
                    return convert(items)
            assert self._pool is not None
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, convert, items)
            except BrokenProcessPool:
                log.error("file sink: conversion helper (pid %s) died; starting another", self.helper_pid)
                pool, self._pool = self._pool, None
                pool.shutdown(wait=False)
                if attempt == 0:
                    FILE_HELPER_RESTARTS.inc()
        raise HelperDied(f"conversion helper died twice converting {len(items)} record(s)")

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Append one line (or message) per record; each record's is with the OS before this returns.

        Parts that do not convert are in the rejects file by then, so the record counts as
        written. Raises TransientSinkError (``written``: the records appended before it) on an
        I/O error, HelperDied when the conversion helper keeps dying.
        """
        converted: list[_Converted]
        if self._format == "proto":
            converted = [(_LENGTH.pack(len(rec.value)) + rec.value, []) for rec in records]
        else:
            converted = await self._convert([(rec.signal.value, rec.value) for rec in records])
        for i, (rec, (data, rejects)) in enumerate(zip(records, converted, strict=True)):
            try:
                self._writer.append(rec, data, rejects)
            except OSError as exc:
                raise TransientSinkError(f"file sink: {exc}", written=records[:i]) from exc
            for _part, reason in rejects:
                FILE_REJECTED_PARTS.labels(rec.signal.value).inc()
                log.warning("file sink: part of %s/%d@%d does not convert, kept in the rejects file: %s",
                            rec.topic, rec.partition, rec.offset, reason)

    async def park(self, rejected: Sequence[Rejection]) -> None:
        """Dead letters of the embedded pipeline: each rejected record (or part), with the reason, in the
        tenant's rejects file. Raises TransientSinkError on an I/O error, ``written`` naming the
        records parked before it (nothing of the failing one is left behind)."""
        for i, rej in enumerate(rejected):
            try:
                self._writer.append(rej.record, None, [(rej.value, rej.reason)])
            except OSError as exc:
                raise TransientSinkError(f"file sink rejects: {exc}",
                                         written=[r.record for r in rejected[:i]]) from exc
            log.error("file sink: %s/%d@%d set aside in the rejects file: %s", rej.record.topic,
                      rej.record.partition, rej.record.offset, rej.reason)


def make_sink(cfg: Config) -> FileSink:
    """Entry point for ``telemetry-gateway pipelines --sink file``.

    Several workers may feed the same data dir: one file per process keeps lines whole.
    """
    return FileSink(cfg.pipelines.file.data_dir, suffix=f"-p{os.getpid()}",
                    file_format=cfg.pipelines.file.format)
