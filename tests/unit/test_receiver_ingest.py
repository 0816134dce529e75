"""Ingest: the transport-independent decisions, with the real Batcher and a scripted publish."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import REGISTRY

from bus.contract import Batch, BusUnavailable
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.tenancy import Authenticator, RateLimiter
from otlp.signals import Signal
from settings import config
from tests.waiting import await_for


def spans(n: int) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        scope.spans.add(name=f"s{i}")
    return req.SerializeToString()


class ScriptedBus:
    """publish() waits on ``gate`` and then fails with ``error`` if set: pure control, no I/O."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None
        self.batches: list[Batch] = []

    async def publish(self, batch: Batch) -> None:
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.batches.append(batch)


def make(env: Mapping[str, str]) -> tuple[Ingest, ScriptedBus, Batcher]:
    cfg = config.load(None, env={"TG_BATCH__MAX_AGE_MS": "0", **env})
    bus = ScriptedBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, cfg.batch.max_age_ms / 1000)
    return Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits)), bus, batcher


def refused_items(reason: str) -> float:
    value = REGISTRY.get_sample_value("gateway_refused_items_total",
                                              {"signal": "traces", "reason": reason})
    return value or 0.0


async def test_ok_after_publish_and_correlation_kept() -> None:
    ingest, bus, batcher = make({})
    out = await ingest.ingest(Signal.TRACES, "http", {"x-correlation-id": "abc-1"}, spans(3))
    assert out.ok and out.correlation_id == "abc-1"
    assert [b.items for b in bus.batches] == [3]
    await batcher.close()


async def test_invalid_correlation_id_is_replaced() -> None:
    ingest, _bus, batcher = make({})
    out = await ingest.ingest(Signal.TRACES, "http", {"x-correlation-id": "bad id\r\n"}, spans(1))
    assert out.ok and out.correlation_id != "bad id\r\n" and len(out.correlation_id) == 36
    await batcher.close()


async def test_bus_unavailable_is_retryable_refusal() -> None:
    ingest, bus, batcher = make({})
    bus.error = BusUnavailable("down", retry_after_s=5.0)
    before = refused_items("bus_unavailable")
    out = await ingest.ingest(Signal.TRACES, "grpc", {}, spans(4))
    assert out.refused == "bus_unavailable" and out.retry_after_s == 5.0
    assert refused_items("bus_unavailable") == before + 4
    await batcher.close()


async def test_overloaded_beyond_max_concurrent_requests() -> None:
    ingest, bus, batcher = make({"TG_SERVER__MAX_CONCURRENT_REQUESTS": "1"})
    bus.gate.clear()
    first = asyncio.create_task(ingest.ingest(Signal.TRACES, "http", {}, spans(1)))

    async def first_in_flight() -> bool:
        return ingest.inflight == 1

    await await_for(first_in_flight, within=5, what="the first request in flight")
    second = await ingest.ingest(Signal.TRACES, "grpc", {}, spans(1))
    assert second.refused == "overloaded" and second.retry_after_s
    bus.gate.set()
    assert (await first).ok
    await batcher.close()


async def test_accepted_mode_counts_batches_lost_after_ack() -> None:
    ingest, bus, batcher = make({"TG_ACK": "accepted"})
    bus.error = BusUnavailable("down")
    before = refused_items("lost_after_ack")
    out = await ingest.ingest(Signal.TRACES, "http", {}, spans(2))
    assert out.ok  # answered before the bus was tried
    await batcher.close()
    assert refused_items("lost_after_ack") == before + 2


async def test_unauthenticated_and_rate_limited() -> None:
    ingest, _bus, batcher = make({"TG_AUTH__ENABLED": "true", "TG_AUTH__API_KEYS": "{k1: acme}",
                                  "TG_LIMITS__DEFAULT__ITEMS_PER_SECOND": "1",
                                  "TG_LIMITS__DEFAULT__ITEMS_BURST": "3"})
    assert (await ingest.ingest(Signal.TRACES, "http", {}, spans(1))).refused == "unauthenticated"
    key = {"x-api-key": "k1"}
    assert (await ingest.ingest(Signal.TRACES, "http", key, spans(3))).ok
    limited = await ingest.ingest(Signal.TRACES, "http", key, spans(3))
    assert limited.refused == "rate_limited" and limited.retry_after_s and limited.retry_after_s > 0
    await batcher.close()


def _with_one_huge_span(small: int, huge_bytes: int) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(small):
        scope.spans.add(name=f"s{i}")
    scope.spans.add(name="huge" + "x" * huge_bytes)
    return req.SerializeToString()


async def test_item_over_the_bus_limit_is_refused_for_good_and_the_rest_accepted() -> None:
    cfg = config.load(None, env={"TG_BATCH__MAX_AGE_MS": "0"})
    bus = ScriptedBus()
    batcher = Batcher(bus.publish, cfg.batch.max_bytes, 0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits), max_item_bytes=4096)
    before = refused_items("too_large")
    out = await ingest.ingest(Signal.TRACES, "grpc", {}, _with_one_huge_span(3, 10_000))
    assert out.ok and out.rejected_items == 1 and "larger than the bus limit" in out.message
    assert [b.items for b in bus.batches] == [3]
    assert all(len(b.payload) <= 4096 for b in bus.batches)
    # A request of nothing but oversized items is refused as too large: not retryable.
    alone = await ingest.ingest(Signal.TRACES, "grpc", {}, _with_one_huge_span(0, 10_000))
    assert alone.refused == "too_large" and alone.retry_after_s is None
    assert refused_items("too_large") == before + 2
    await batcher.close()


def refused_requests(transport: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("gateway_refused_requests_total",
                                              {"signal": "traces", "transport": transport, "reason": reason})
    return value or 0.0


async def test_accepted_mode_refuses_when_data_waiting_for_a_stalled_bus_exceeds_the_budget() -> None:
    one = len(spans(50))
    ingest, bus, batcher = make({"TG_ACK": "accepted", "TG_BATCH__MAX_PENDING_BYTES": str(10 * one)})
    bus.gate.clear()  # the bus takes nothing: every flushed batch waits for a publish slot
    before = refused_requests("http", "overloaded")
    answers = [await ingest.ingest(Signal.TRACES, "http", {}, spans(50)) for _ in range(100)]
    ok = [a for a in answers if a.ok]
    refused = [a for a in answers if not a.ok]
    assert refused and all(a.refused == "overloaded" and a.retry_after_s for a in refused)
    assert refused_requests("http", "overloaded") == before + len(refused)
    # Refused from the first request that found the budget spent: at most one request over it.
    assert answers.index(refused[0]) == len(ok)
    assert 10 * one <= batcher.pending_bytes < 12 * one
    bus.gate.set()

    async def drained() -> bool:
        return batcher.pending_bytes == 0

    await await_for(drained, within=5, what="the stalled batches published")
    assert (await ingest.ingest(Signal.TRACES, "http", {}, spans(1))).ok  # budget freed once published
    await batcher.close()


async def test_unexpected_publish_error_is_a_retryable_bus_refusal() -> None:
    ingest, bus, batcher = make({})
    bus.error = RuntimeError("bus bug")

    def errors() -> float:
        value = REGISTRY.get_sample_value("gateway_publish_errors_total",
                                                  {"signal": "traces", "error": "RuntimeError"})
        return value or 0.0

    before = errors()
    out = await ingest.ingest(Signal.TRACES, "grpc", {}, spans(2))
    assert out.refused == "bus_unavailable" and out.retry_after_s and "bus bug" in out.message
    assert errors() == before + 1
    await batcher.close()
