"""File sink for the embedded default: OTLP/JSON lines under ``<data_dir>/<tenant>/``.

One line per consumed record (a whole Export request, as OTLP/JSON), so the files can be read
back with any OTLP/JSON tool or replayed with ``curl --data-binary`` line by line. Each write
batch is flushed to the OS before ``write`` returns, which is when the pipeline commits.

Turning protobuf into JSON costs far more than ingesting it (about 13 ms against 0.3 ms for a
512-span request), so with ``offload=True`` (the embedded gateway) the conversion and the writes
run in one helper process: the receivers' event loop stays free for clients and the sink uses
another core. The helper is spawned, not forked, because the gateway process runs grpc threads.

A record that is framed correctly but does not convert (a span name that is not UTF-8 passes the
ingest checks, which only look at the framing) is converted again per ResourceX: the batcher joins
several acknowledged requests into one record, so one bad string must not cost the others. What
still fails goes to ``<tenant>/rejected/<signal><suffix>.jsonl``, with its coordinates, the
error and the bytes, because the embedded pipeline has no dead-letter topic to park it in. A
directory of its own keeps readers that glob ``<tenant>/<signal>*.jsonl`` on the data alone.

Not idempotent under redelivery: a record redelivered after a crash between write and commit
is appended again. The memory bus does not outlive the process, so in the embedded setup that
window only exists for Kafka sources, where the Elasticsearch sink is the idempotent choice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import os
import re
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO

import orjson
from prometheus_client import Counter

from gateway.bus.base import BusRecord
from gateway.config import Config
from gateway.otlp_json import proto_to_json
from gateway.signals import Signal
from gateway.wire import WireError, top_level_fields

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_REJECTS_DIR = "rejected"

# What crosses to the helper process per record:
# (tenant, signal value, protobuf bytes, topic, partition, offset).
_Item = tuple[str, str, bytes, str, int, int]

# Counted here, not in the helper process: only the sink's own process serves /metrics.
REJECTED_PARTS = Counter(
    "pipeline_file_sink_rejected_parts_total",
    "Parts of records (a ResourceX, or a whole record that cannot be split) that do not convert "
    "to OTLP/JSON, written to the rejects file instead of the data file.",
    ["signal"],
)


def safe_name(tenant: str) -> str:
    """A directory name for a tenant that cannot climb out of ``data_dir``."""
    name = _UNSAFE.sub("_", tenant) or "_"
    return "_" + name if name.startswith(".") else name


def _path(data_dir: Path, tenant: str, signal_name: str, suffix: str, subdir: str = "") -> Path:
    return data_dir / safe_name(tenant) / subdir / f"{signal_name}{suffix}.jsonl"


def complete_lines(path: Path) -> Iterator[bytes]:
    """The lines of a sink file that are whole: a reader may look while a line is being written,
    and a line without its newline is not delivered yet."""
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield line


def _salvage(signal: Signal, value: bytes, error: str) -> tuple[bytes | None, list[tuple[bytes, str]]]:
    """For a record that does not convert: the JSON line of the parts that do (None if none),
    and (part, reason) for each part that does not."""
    try:
        parts = top_level_fields(value)
    except WireError:
        return None, [(value, error)]
    good: list[bytes] = []
    bad: list[tuple[bytes, str]] = []
    for part in parts:
        try:
            proto_to_json(signal, part)
        except WireError as exc:
            bad.append((part, str(exc)))
        else:
            good.append(part)
    if not good:
        return None, bad
    try:
        return proto_to_json(signal, b"".join(good)), bad
    except WireError:  # parts that convert alone should convert together; if not, keep it all
        return None, [(value, error)]


class JsonLinesWriter:
    """The synchronous part: convert, append, flush. Lives in the sink's process or its helper."""

    def __init__(self, data_dir: str | Path, suffix: str) -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._files: dict[tuple[str, str], IO[bytes]] = {}

    def path(self, tenant: str, signal_name: str) -> Path:
        return _path(self.data_dir, tenant, signal_name, self._suffix)

    def _file(self, tenant: str, signal_name: str, subdir: str = "") -> IO[bytes]:
        key = (tenant, f"{subdir}/{signal_name}")
        f = self._files.get(key)
        if f is None:
            p = _path(self.data_dir, tenant, signal_name, self._suffix, subdir)
            p.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[key] = p.open("ab")
        return f

    def write(self, items: Sequence[_Item]) -> list[tuple[int, str]]:
        """Append one line per item, flush; return (index, reason) of each part set aside as a reject."""
        rejected: list[tuple[int, str]] = []
        touched: set[IO[bytes]] = set()
        for i, (tenant, signal_name, value, topic, partition, offset) in enumerate(items):
            try:
                line: bytes | None = proto_to_json(Signal(signal_name), value)
            except WireError as exc:
                line, bad = _salvage(Signal(signal_name), value, str(exc))
                for part, reason in bad:
                    f = self._file(tenant, signal_name, _REJECTS_DIR)
                    f.write(orjson.dumps({"topic": topic, "partition": partition, "offset": offset,
                                          "error": reason, "payload": base64.b64encode(part).decode()})
                            + b"\n")
                    touched.add(f)
                    rejected.append((i, reason))
            if line is None:
                continue
            f = self._file(tenant, signal_name)
            f.write(line + b"\n")
            touched.add(f)
        for f in touched:
            f.flush()
        return rejected

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


# --- the helper process's side ----------------------------------------------------------------

_helper_writer: JsonLinesWriter | None = None


def _helper_init(data_dir: str, suffix: str) -> None:
    """Runs once in the helper: it stops when its parent shuts the pool down, not on signals."""
    global _helper_writer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _helper_writer = JsonLinesWriter(data_dir, suffix)


def _helper_write(items: Sequence[_Item]) -> list[tuple[int, str]]:
    assert _helper_writer is not None
    return _helper_writer.write(items)


class FileSink:
    """Appends OTLP/JSON lines to ``<data_dir>/<tenant>/<signal><suffix>.jsonl``.

    ``suffix`` keeps writers of one data dir apart (``--workers N`` gives each worker its own
    memory bus and file sink, so each writes its own files, e.g. ``traces-w1.jsonl``).
    """

    name = "file"
    signals = frozenset(Signal)

    def __init__(self, data_dir: str | Path, suffix: str = "", *, offload: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._offload = offload
        # Offloaded, the helper process owns the files; this process never opens one.
        self._writer = None if offload else JsonLinesWriter(self.data_dir, suffix)
        self._pool: ProcessPoolExecutor | None = None

    def path(self, tenant: str, signal: Signal) -> Path:
        return _path(self.data_dir, tenant, signal.value, self._suffix)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._offload:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_helper_init,
                                             initargs=(str(self.data_dir), self._suffix))

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Append one line per record; every touched file is flushed before this returns.

        Parts that do not convert are in the rejects file by then, so the record counts as written.
        """
        items = [(rec.tenant, rec.signal.value, rec.value, rec.topic, rec.partition, rec.offset)
                 for rec in records]
        if self._pool is not None:
            rejected = await asyncio.get_running_loop().run_in_executor(self._pool, _helper_write, items)
        else:
            assert self._writer is not None, "an offloading sink writes only after start()"
            rejected = self._writer.write(items)
        for i, reason in rejected:
            rec = records[i]
            REJECTED_PARTS.labels(rec.signal.value).inc()
            log.warning("file sink: part of %s/%d@%d does not convert, kept in the rejects file: %s",
                        rec.topic, rec.partition, rec.offset, reason)


def make_sink(cfg: Config) -> FileSink:
    """Entry point for ``telemetry-gateway pipelines --sink file``.

    Several workers may feed the same data dir: one file per process keeps lines whole.
    """
    return FileSink(cfg.pipelines.file.data_dir, suffix=f"-p{os.getpid()}")
