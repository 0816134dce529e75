"""The Bus contract between the ingest edge and the pipelines.

Both sides speak plain OTLP: a message value is one serialized Export*ServiceRequest for one
tenant (docs/architecture.md principle 2), so anything that reads OTLP can read our topics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from otlp.signals import HEADER_CORRELATION, HEADER_SIGNAL, HEADER_TENANT, Signal


class BusUnavailable(Exception):
    """The bus cannot take data now; the client should retry (HTTP 503 / gRPC UNAVAILABLE).

    ``retry_after_s`` is the hint sent to the client (Retry-After / RetryInfo). SDK exporters
    retry only a few times, honouring the hint, so it bounds how long an outage they ride out.
    """

    def __init__(self, message: str = "", retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Batch:
    """What the batcher hands to the bus: concatenated requests of one (signal, tenant)."""

    signal: Signal
    tenant: str
    payload: bytes
    items: int
    correlation_ids: list[str] = field(default_factory=list)

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka-style headers; correlation ids of every request in the batch, comma-joined."""
        return [
            (HEADER_TENANT, self.tenant.encode()),
            (HEADER_CORRELATION, ",".join(self.correlation_ids).encode()),
            (HEADER_SIGNAL, self.signal.value.encode()),
        ]


@dataclass(frozen=True, slots=True)
class BusRecord:
    """One consumed message, with the coordinates sinks use to derive idempotent ids."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]
    signal: Signal

    @property
    def tenant(self) -> str:
        return self.headers.get(HEADER_TENANT, "")

    @property
    def correlation_ids(self) -> list[str]:
        raw = self.headers.get(HEADER_CORRELATION, "")
        return [c for c in raw.split(",") if c]


class Bus(Protocol):
    """Producer side. ``publish`` returns only once the bus holds the batch durably.

    A bus may wrap another (a stage: see ``bus.factory``); it then states its own limits and
    readiness, which are usually those of the bus it wraps.
    """

    @property
    def max_item_bytes(self) -> int | None:
        """The largest serialized single item (with its resource and scope) the bus can carry;
        None when it has no such limit. The edge refuses larger items before batching."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, batch: Batch) -> None:
        """Raise BusUnavailable when the batch could not be made durable."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): what /readyz reports."""
        ...


class Source(Protocol):
    """Consumer side used by the pipelines runner (a Kafka consumer group or the memory bus)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int) -> Sequence[BusRecord]: ...

    async def commit(self, records: Sequence[BusRecord]) -> None:
        """Mark these records done; called only after the sink acknowledged them."""
        ...
