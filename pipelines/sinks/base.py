"""The Sink contract. The runner commits offsets only after ``write`` returns.

A sink may also split its write into ``prepare`` (CPU work that needs no store: decoding and
converting records) and ``send`` (the store round trips), the ``PreparingSink`` protocol. The
pipeline then prepares the next batch while the store writes the current one; a sink without
the split is written through ``write`` alone (``prepare_for`` / ``send_prepared`` are the
default that keeps it working).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bus.contract import BusRecord
from otlp.signals import Signal


@dataclass(frozen=True, slots=True)
class Rejection:
    """``record`` (the very object ``write`` was given) refused for ``reason``.

    ``part``: when only part of the record is refused, the bytes to dead-letter instead of
    ``record.value`` (an Export request of its own); None when the whole record is refused.
    """

    record: BusRecord
    reason: str
    part: bytes | None = None

    @property
    def value(self) -> bytes:
        """What goes to the dead letters: the part, or the whole record."""
        return self.record.value if self.part is None else self.part


class TransientSinkError(Exception):
    """The store cannot take the write now (5xx, 429, connection): retry later.

    A write that got part of the way names what it settled: ``written`` and ``rejected`` (the
    record objects ``write`` was given). The pipeline's retry then sends only the rest, so a sink
    keeps no memory between attempts, and a store that is not idempotent (Jaeger) gets no
    duplicates from a batch that failed half-way.

    ``retry_after_s``: how long the store asked to be left alone (HTTP ``Retry-After``, gRPC
    ``RetryInfo``), for the retry's backoff; None when it did not say.
    """

    def __init__(self, message: str, *, written: Sequence[BusRecord] = (),
                 rejected: Sequence[Rejection] = (), retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.written = list(written)
        self.rejected = list(rejected)
        self.retry_after_s = retry_after_s


class PermanentSinkError(Exception):
    """Some records can never be written (mapping error, malformed OTLP).

    Everything not listed in ``rejected`` was written; the runner sends the rejected records to
    the dead-letter topic with the reason in headers, then commits.
    """

    def __init__(self, rejected: Sequence[Rejection]) -> None:
        super().__init__(f"{len(rejected)} record(s) rejected: {rejected[0].reason if rejected else ''}")
        self.rejected = list(rejected)


class Sink(Protocol):
    """A destination for consumed OTLP batches; must be idempotent under redelivery."""

    name: str
    signals: frozenset[Signal]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Return once the store acknowledged every record; raise Transient/PermanentSinkError."""
        ...


@runtime_checkable
class PreparingSink(Protocol):
    """A sink whose ``write(records)`` is ``send(await prepare(records))``.

    ``prepare`` does the CPU work: it must not touch the store, keep no state between calls,
    and should yield (``await asyncio.sleep(0)``) between records so the event loop serves the
    write in flight and the consumer's heartbeats. A part it cannot convert goes into the
    prepared value (as a rejection for ``send`` to raise). If it raises, the pipeline drops
    the value and writes the records through ``write``, whose errors are handled as always.
    ``send`` writes one prepared value exactly as ``write`` would write its records, with the
    same errors (Transient/PermanentSinkError naming the record objects given to ``prepare``),
    and is called at most once per prepared value: a retry goes through ``write`` again.
    """

    async def prepare(self, records: Sequence[BusRecord]) -> Any: ...

    async def send(self, prepared: Any) -> None: ...


async def prepare_for(sink: Sink, records: Sequence[BusRecord]) -> Any:
    """``sink.prepare(records)`` for a ``PreparingSink``; None (nothing prepared) for any other."""
    if isinstance(sink, PreparingSink):
        return await sink.prepare(records)
    return None


async def send_prepared(sink: Sink, records: Sequence[BusRecord], prepared: Any) -> None:
    """Write ``records``: through ``send(prepared)`` when a value was prepared, else ``write``."""
    if prepared is not None and isinstance(sink, PreparingSink):
        await sink.send(prepared)
    else:
        await sink.write(records)
