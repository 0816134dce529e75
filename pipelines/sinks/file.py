"""File sink for the embedded default: OTLP/JSON lines under ``<data_dir>/<tenant>/``.

One line per consumed record (a whole Export request, as OTLP/JSON), so the files can be read
back with any OTLP/JSON tool or replayed with ``curl --data-binary`` line by line. Each write
batch is flushed to the OS before ``write`` returns, which is when the pipeline commits.

Turning protobuf into JSON costs far more than ingesting it (about 13 ms against 0.3 ms for a
512-span request), so with ``offload=True`` (the embedded gateway) the conversion and the writes
run in one helper process: the receivers' event loop stays free for clients and the sink uses
another core. The helper is spawned, not forked, because the gateway process runs grpc threads.

Not idempotent under redelivery: a record redelivered after a crash between write and commit
is appended again. The memory bus does not outlive the process, so in the embedded setup that
window only exists for Kafka sources, where the Elasticsearch sink is the idempotent choice.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO

from gateway.bus.base import BusRecord
from gateway.otlp_json import proto_to_json
from gateway.signals import Signal
from gateway.wire import WireError
from pipelines.sinks.base import PermanentSinkError, Rejection

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

# What crosses to the helper process per record: (tenant, signal value, protobuf bytes).
_Item = tuple[str, str, bytes]


def safe_name(tenant: str) -> str:
    """A directory name for a tenant that cannot climb out of ``data_dir``."""
    name = _UNSAFE.sub("_", tenant) or "_"
    return "_" + name if name.startswith(".") else name


class JsonLinesWriter:
    """The synchronous part: convert, append, flush. Lives in the sink's process or its helper."""

    def __init__(self, data_dir: str | Path, suffix: str) -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._files: dict[tuple[str, str], IO[bytes]] = {}

    def path(self, tenant: str, signal_name: str) -> Path:
        return self.data_dir / safe_name(tenant) / f"{signal_name}{self._suffix}.jsonl"

    def _file(self, tenant: str, signal_name: str) -> IO[bytes]:
        f = self._files.get((tenant, signal_name))
        if f is None:
            p = self.path(tenant, signal_name)
            p.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[(tenant, signal_name)] = p.open("ab")
        return f

    def write(self, items: Sequence[_Item]) -> list[tuple[int, str]]:
        """Append one line per item, flush; return (index, reason) of items that are not OTLP."""
        rejected: list[tuple[int, str]] = []
        touched: set[IO[bytes]] = set()
        for i, (tenant, signal_name, value) in enumerate(items):
            try:
                line = proto_to_json(Signal(signal_name), value)
            except WireError as exc:
                rejected.append((i, str(exc)))
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
        self._writer = JsonLinesWriter(self.data_dir, suffix)
        self._pool: ProcessPoolExecutor | None = None

    def path(self, tenant: str, signal: Signal) -> Path:
        return self._writer.path(tenant, signal.value)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._offload:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_helper_init,
                                             initargs=(str(self.data_dir), self._suffix))

    async def stop(self) -> None:
        self._writer.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Append one line per record; every touched file is flushed before this returns."""
        items = [(rec.tenant, rec.signal.value, rec.value) for rec in records]
        if self._pool is not None:
            rejected = await asyncio.get_running_loop().run_in_executor(self._pool, _helper_write, items)
        else:
            rejected = self._writer.write(items)
        if rejected:
            raise PermanentSinkError([Rejection(records[i], reason) for i, reason in rejected])
