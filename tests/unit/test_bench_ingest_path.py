"""Speed of the ingest middle, per 512-span request (the OTel SDK BatchSpanProcessor's batch).

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_ingest_path.py --benchmark-enable --benchmark-only
Spans/s per core = 512 / mean. ``test_bench_upb_*`` is the decode/edit/encode alternative
that ``wire.prepare`` is measured against, and protobuf's parser that the content check
(``otlp/validate.py``, in C) is measured against; ``prepare`` includes the check,
``..._without_content_check`` shows what it adds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from gateway import correlation
from gateway.batcher import Batcher
from gateway.ingest import Ingest
from gateway.tenancy import Authenticator, RateLimiter
from otlp.json_mapping import json_to_proto, proto_to_json
from otlp.signals import ATTR_CORRELATION, ATTR_TENANT, Signal
from otlp.validate import check_resource
from otlp.wire import prepare, split, split_spans_by_trace_id
from settings.config import AuthConfig, Config, LimitsConfig, RateLimit
from tests.otlp_payloads import payload

SPANS = 512
ATTRS = ((ATTR_TENANT, "acme"), (ATTR_CORRELATION, "0192a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b"))
TRACES_512 = payload(Signal.TRACES, spans_per_request=SPANS, attributes=10)
TRACES_512_JSON = proto_to_json(Signal.TRACES, TRACES_512)
RESOURCE_512 = ExportTraceServiceRequest.FromString(TRACES_512).resource_spans[0].SerializeToString()

pytestmark = pytest.mark.benchmark(group="ingest-path", min_rounds=20)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


async def _no_op_publish(batch: Batch) -> None:
    return None


def test_bench_prepare_512_spans(benchmark: BenchmarkFixture) -> None:
    prepared = benchmark(prepare, Signal.TRACES, TRACES_512, ATTRS)
    assert prepared.items == SPANS


def test_bench_prepare_512_spans_without_content_check(benchmark: BenchmarkFixture) -> None:
    """The framing walk and enrichment alone: ``prepare`` less the content check."""
    assert benchmark(prepare, Signal.TRACES, TRACES_512, ATTRS, check=False).items == SPANS


def test_bench_content_check_512_spans(benchmark: BenchmarkFixture) -> None:
    """``validate.check_resource`` (C) over the one 230 KB ResourceSpans of a 512-span request."""
    assert benchmark(check_resource, Signal.TRACES, RESOURCE_512) is None


def test_bench_upb_parse_512_spans(benchmark: BenchmarkFixture) -> None:
    """protobuf's own parser over the same ResourceSpans: what the check is measured against."""
    assert len(benchmark(ResourceSpans.FromString, RESOURCE_512).scope_spans) > 0


@pytest.mark.parametrize(("signal", "shape", "items"), [
    (Signal.LOGS, {"records": 512}, 512),
    (Signal.METRICS, {"points": 100}, 500),
])
def test_bench_prepare_logs_and_metrics(benchmark: BenchmarkFixture, signal: Signal, shape: dict[str, int],
                                        items: int) -> None:
    data = payload(signal, **shape)
    assert benchmark(prepare, signal, data, ATTRS).items == items


def test_bench_upb_decode_edit_encode_512_spans(benchmark: BenchmarkFixture) -> None:
    """The alternative to ``prepare``: full upb decode, count, edit the resource, encode."""
    keys = {k for k, _ in ATTRS}

    def upb_prepare() -> tuple[bytes, int]:
        msg = ExportTraceServiceRequest.FromString(TRACES_512)
        n = 0
        for rs in msg.resource_spans:
            n += sum(len(ss.spans) for ss in rs.scope_spans)
            keep = [a for a in rs.resource.attributes if a.key not in keys]
            del rs.resource.attributes[:]
            rs.resource.attributes.extend(keep)
            for k, v in ATTRS:
                rs.resource.attributes.add(key=k, value=AnyValue(string_value=v))
        return msg.SerializeToString(), n

    _, n = benchmark(upb_prepare)
    assert n == SPANS


def test_bench_json_to_proto_512_spans(benchmark: BenchmarkFixture) -> None:
    assert benchmark(json_to_proto, Signal.TRACES, TRACES_512_JSON) == TRACES_512


def test_bench_proto_to_json_512_spans(benchmark: BenchmarkFixture) -> None:
    """What the file sink pays per record."""
    assert benchmark(proto_to_json, Signal.TRACES, TRACES_512) == TRACES_512_JSON


def test_bench_split_spans_by_trace_id_512_spans(benchmark: BenchmarkFixture) -> None:
    assert len(benchmark(split_spans_by_trace_id, TRACES_512)) == 16


def test_bench_split_512_spans_into_64k(benchmark: BenchmarkFixture) -> None:
    pieces = benchmark(split, Signal.TRACES, TRACES_512, 64 * 1024)
    assert len(pieces) > 1


def test_bench_batcher_add_and_flush(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """64 requests of one tenant into batches of 1 MiB, flushed and published (no-op)."""
    chunk = prepare(Signal.TRACES, TRACES_512, ATTRS).payload

    async def run() -> None:
        b = Batcher(_no_op_publish, max_bytes=1 << 20, max_age_s=3600)
        futs = [b.add(Signal.TRACES, "acme", chunk, SPANS, "c") for _ in range(64)]
        await b.close()
        await asyncio.gather(*futs)

    benchmark(lambda: loop.run_until_complete(run()))


def test_bench_receive_enrich_batch_512_spans(benchmark: BenchmarkFixture,
                                              loop: asyncio.AbstractEventLoop) -> None:
    """One request through auth, rate limit, correlation id, prepare, batcher and a no-op publish."""
    auth = Authenticator(AuthConfig(enabled=True, api_keys={f"key-{i}": f"tenant-{i}" for i in range(8)}))
    limiter = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=1e12, bytes_per_second=1e15)))
    headers = {"authorization": "Bearer key-3", "content-type": "application/x-protobuf"}
    batcher = Batcher(_no_op_publish, max_bytes=1 << 20, max_age_s=0)

    async def one() -> int:
        tenant = auth.tenant_for(headers)
        cid = correlation.accept(headers.get("x-correlation-id")) or correlation.new_id()
        prepared = prepare(Signal.TRACES, TRACES_512, ((ATTR_TENANT, tenant), (ATTR_CORRELATION, cid)))
        assert limiter.admit(tenant, prepared.items, len(TRACES_512)) is None
        await batcher.add(Signal.TRACES, tenant, prepared.payload, prepared.items, cid)
        return prepared.items

    assert benchmark(lambda: loop.run_until_complete(one())) == SPANS
    loop.run_until_complete(batcher.close())


def test_bench_ingest_class_512_spans(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The same path through ``gateway.ingest.Ingest`` as the receivers call it, metrics included."""
    cfg = Config()
    cfg.auth = AuthConfig(enabled=True, api_keys={"key-3": "tenant-3"})
    batcher = Batcher(_no_op_publish, max_bytes=1 << 20, max_age_s=0)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    headers = {"authorization": "Bearer key-3"}

    async def one() -> bool:
        outcome = await ingest.ingest(Signal.TRACES, "http", headers, TRACES_512)
        return outcome.ok

    assert benchmark(lambda: loop.run_until_complete(one()))
    loop.run_until_complete(batcher.close())
