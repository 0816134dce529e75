"""File sink for the embedded default: OTLP/JSON lines under ``<data_dir>/<tenant>/``.

One line per consumed record (a whole Export request, as OTLP/JSON), so the files can be read
back with any OTLP/JSON tool or replayed with ``curl --data-binary`` line by line. Each write
batch is flushed to the OS before ``write`` returns, which is when the pipeline commits.

Not idempotent under redelivery: a record redelivered after a crash between write and commit
is appended again. The memory bus does not outlive the process, so in the embedded setup that
window only exists for Kafka sources, where the Elasticsearch sink is the idempotent choice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from gateway.bus.base import BusRecord
from gateway.otlp_json import proto_to_json
from gateway.signals import Signal
from gateway.wire import WireError
from pipelines.sinks.base import PermanentSinkError, Rejection

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(tenant: str) -> str:
    """A directory name for a tenant that cannot climb out of ``data_dir``."""
    name = _UNSAFE.sub("_", tenant) or "_"
    return "_" + name if name.startswith(".") else name


class FileSink:
    """Appends OTLP/JSON lines to ``<data_dir>/<tenant>/<signal><suffix>.jsonl``.

    ``suffix`` keeps workers of one gateway apart (``--workers N`` gives each worker its own
    memory bus and file sink, so each writes its own files, e.g. ``traces-w1.jsonl``).
    """

    name = "file"
    signals = frozenset(Signal)

    def __init__(self, data_dir: str | Path, suffix: str = "") -> None:
        self.data_dir = Path(data_dir)
        self._suffix = suffix
        self._files: dict[tuple[str, Signal], IO[bytes]] = {}

    def path(self, tenant: str, signal: Signal) -> Path:
        return self.data_dir / safe_name(tenant) / f"{signal.value}{self._suffix}.jsonl"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _file(self, tenant: str, signal: Signal) -> IO[bytes]:
        f = self._files.get((tenant, signal))
        if f is None:
            p = self.path(tenant, signal)
            p.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[(tenant, signal)] = p.open("ab")
        return f

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Append one line per record; flush every touched file before returning."""
        rejected: list[Rejection] = []
        touched: set[IO[bytes]] = set()
        for rec in records:
            try:
                line = proto_to_json(rec.signal, rec.value)
            except WireError as exc:
                rejected.append(Rejection(rec, str(exc)))
                continue
            f = self._file(rec.tenant, rec.signal)
            f.write(line + b"\n")
            touched.add(f)
        for f in touched:
            f.flush()
        if rejected:
            raise PermanentSinkError(rejected)
