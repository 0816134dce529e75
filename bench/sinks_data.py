"""The pre-filled topics ``bench sinks`` drains: one tenant's OTLP records spread over every partition.

Records are written the way a producer that spreads one tenant over all partitions writes them
(issue 15): each message goes to an explicit partition, round robin, and what must stay together
stays in one message, so in one partition: a trace's spans (every trace id is new to its
message), a metric series' points (each partition has its own series, and a series' timestamps
rise message by message within its partition, so remote write never sees a sample out of
order), log records freely. Two workers of one consumer group can then share the work.

A set of messages is built once per signal with a placeholder tenant and re-stamped for each
scenario by replacing the placeholder's bytes (same length), so every scenario gets a fresh
tenant (its own index, its own series) without paying for the protobuf encoding again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from bench.payloads import kv, logs_request, resource, scope, traces_request
from otlp.signals import HEADER_CORRELATION, HEADER_SIGNAL, HEADER_TENANT, Signal

TENANT_PLACEHOLDER = "sinks-00000000"  # 14 characters; a scenario's tenant has the same length
SPANS_PER_TRACE = 20


def tenant_name(token: int) -> str:
    """A tenant of the placeholder's length: ``sinks-`` and 8 hex digits."""
    return f"sinks-{token & 0xFFFFFFFF:08x}"


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message to write: its partition, value (an Export request) and item count."""

    partition: int
    value: bytes
    items: int


@dataclass(frozen=True, slots=True)
class Fill:
    """What one scenario's topic holds once written."""

    signal: Signal
    tenant: str
    messages: list[Message]

    @property
    def items(self) -> int:
        return sum(m.items for m in self.messages)


def build_messages(
    signal: Signal, messages: int, items: int, partitions: int, now_ms: int | None = None
) -> list[Message]:
    """``messages`` requests of ``items`` spans / log records / data points each, round robin
    over ``partitions``, all of tenant ``TENANT_PLACEHOLDER``.

    Metrics: ``items`` gauge points per message, one per series; partition ``p`` owns series
    ``p-0 .. p-(items-1)``, and its ``j``-th message carries their points at
    ``now_ms - (per partition - j)`` ms, so the newest sample is about now (Prometheus refuses
    samples far older than its head).
    """
    extra = {"tenant.id": TENANT_PLACEHOLDER}
    out: list[Message] = []
    per_partition = -(-messages // partitions)
    base_ms = (now_ms if now_ms is not None else int(time.time() * 1000)) - per_partition
    for i in range(messages):
        p = i % partitions
        if signal is Signal.TRACES:
            value = traces_request(
                spans_per_request=items,
                traces=max(1, items // SPANS_PER_TRACE),
                seed=1 + i * 7,
                resource_extra=extra,
            ).SerializeToString()
        elif signal is Signal.LOGS:
            value = logs_request(records=items, seed=1 + i * 7, resource_extra=extra).SerializeToString()
        else:
            value = _metrics(p, items, (base_ms + i // partitions) * 1_000_000, extra)
        out.append(Message(p, value, items))
    return out


def _metrics(partition: int, points: int, t_ns: int, extra: dict[str, str]) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add(resource=resource("svc-0", extra))
    sm = rm.scope_metrics.add(scope=scope("meter-0"))
    g = sm.metrics.add(name="bench.sinks.queue.depth", unit="1")
    g.gauge.data_points.extend(
        metrics_pb2.NumberDataPoint(
            attributes=[kv("series", f"{partition}-{k}")], time_unix_nano=t_ns, as_double=float(k)
        )
        for k in range(points)
    )
    data: bytes = req.SerializeToString()
    return data


def restamp(messages: Sequence[Message], tenant: str) -> list[Message]:
    """The same messages with ``tenant`` (as long as the placeholder) in place of the placeholder."""
    old, new = TENANT_PLACEHOLDER.encode(), tenant.encode()
    if len(new) != len(old):
        raise ValueError(f"tenant {tenant!r} must have {len(old)} characters, as the placeholder does")
    return [Message(m.partition, m.value.replace(old, new), m.items) for m in messages]


async def produce(bootstrap: str, topic: str, fill: Fill) -> None:
    """Write ``fill`` to ``topic`` (partitions as given), acks=all, zstd as the gateway sends."""
    from aiokafka import AIOKafkaProducer

    headers = [
        (HEADER_TENANT, fill.tenant.encode()),
        (HEADER_CORRELATION, b"bench-sinks"),
        (HEADER_SIGNAL, fill.signal.value.encode()),
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type="zstd",
        max_request_size=8 * 1024 * 1024,
        linger_ms=5,
    )
    await producer.start()
    try:
        pending = [
            await producer.send(
                topic, m.value, key=fill.tenant.encode(), partition=m.partition, headers=headers
            )
            for m in fill.messages
        ]
        for fut in pending:
            await fut
    finally:
        await producer.stop()
