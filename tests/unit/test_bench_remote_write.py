"""Speed of the remote-write conversion on a batch shaped like a consumer's: many records, each an
SDK export of many series with one point each.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_remote_write.py --benchmark-enable --benchmark-only
Points/s per core = ``extra_info["items"]`` / mean. One round is what the Prometheus sink does per
consumed batch: decode every record, build the series, one ``WriteRequest`` per tenant, serialize
and snappy-compress it (``encode``). ``test_bench_convert.py`` keeps its older single-record case.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as otlp
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from pytest_benchmark.fixture import BenchmarkFixture

from pipelines.convert.remote_write import encode, to_write_requests

pytestmark = pytest.mark.benchmark(group="remote_write", min_rounds=10)

RECORDS = 8  # records per consumed batch, each a later export of the same series
SERIES = 50  # attribute sets per metric
SCOPES = 2
KINDS = 5  # gauge, counter, histogram, exponential histogram, summary
POINTS = RECORDS * SCOPES * KINDS * SERIES
BASE_NS = 1_700_000_000_000_000_000
_CUMULATIVE = otlp.AGGREGATION_TEMPORALITY_CUMULATIVE


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _attrs(i: int) -> list[KeyValue]:
    return [_kv("http.route", f"/api/v1/orders/{i % 10}"), _kv("http.request.method", ("GET", "POST")[i % 2]),
            _kv("http.response.status_code", 200 + i // 10), _kv("server.address", "checkout.internal"),
            _kv("url.scheme", "https"), _kv("network.protocol.version", "1.1")]


def export(tenant: str, record: int) -> bytes:
    """One SDK export: a resource, ``SCOPES`` scopes, one metric of every kind with ``SERIES``
    points, each point its own series; ``record`` moves every timestamp one interval on."""
    t = BASE_NS + record * 10_000_000_000
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add(resource=Resource(attributes=[
        _kv("service.name", "checkout"), _kv("service.namespace", "shop"),
        _kv("service.instance.id", "pod-1"), _kv("tenant.id", tenant),
        _kv("deployment.environment", "prod"), _kv("host.name", "node-7"),
        _kv("k8s.pod.name", "checkout-5d9f"), _kv("telemetry.sdk.language", "python")]))
    for s in range(SCOPES):
        sm = rm.scope_metrics.add(scope=InstrumentationScope(name=f"meter-{s}", version="1.2.3"),
                                  schema_url="https://opentelemetry.io/schemas/1.26.0")
        g = sm.metrics.add(name="process.cpu.utilization", unit="1")
        g.gauge.data_points.extend(otlp.NumberDataPoint(attributes=_attrs(i), time_unix_nano=t, as_double=0.5)
                                   for i in range(SERIES))
        c = sm.metrics.add(name="http.server.requests", unit="{request}")
        c.sum.aggregation_temporality = _CUMULATIVE
        c.sum.is_monotonic = True
        c.sum.data_points.extend(otlp.NumberDataPoint(
            attributes=_attrs(i), start_time_unix_nano=BASE_NS, time_unix_nano=t, as_int=100 + record)
            for i in range(SERIES))
        h = sm.metrics.add(name="http.server.request.duration", unit="s")
        h.histogram.aggregation_temporality = _CUMULATIVE
        h.histogram.data_points.extend(otlp.HistogramDataPoint(
            attributes=_attrs(i), time_unix_nano=t, count=60, sum=15.0,
            bucket_counts=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5],
            explicit_bounds=[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0])
            for i in range(SERIES))
        e = sm.metrics.add(name="rpc.server.duration", unit="ms")
        e.exponential_histogram.aggregation_temporality = _CUMULATIVE
        e.exponential_histogram.data_points.extend(otlp.ExponentialHistogramDataPoint(
            attributes=_attrs(i), time_unix_nano=t, count=12, sum=70.0, scale=3, zero_count=1,
            positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=10, bucket_counts=[1, 2, 0, 3, 4, 1]))
            for i in range(SERIES))
        q = sm.metrics.add(name="db.client.latency", unit="s")
        q.summary.data_points.extend(otlp.SummaryDataPoint(
            attributes=_attrs(i), time_unix_nano=t, count=10, sum=2.0, quantile_values=[
                otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.2),
                otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=0.9)]) for i in range(SERIES))
    return req.SerializeToString()


BATCH = [(export("acme", r), "acme") for r in range(RECORDS)]


def write_bodies(batch: list[tuple[bytes, str]]) -> list[bytes]:
    """What the sink does per consumed batch: convert, then one snappy body per tenant."""
    return [encode(req) for req in to_write_requests(batch).requests.values()]


def test_bench_remote_write_batch_of_8_records_4000_points(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = POINTS
    bodies = benchmark(write_bodies, BATCH)
    assert POINTS == 4000 and len(bodies) == 1
    conv = to_write_requests(BATCH)
    assert not conv.dropped and not conv.bad
    # Every kind's series each get one sample per record (a histogram: 11 buckets, sum, count; a
    # summary: 2 quantiles, sum, count), so the batch holds RECORDS samples per series.
    per_scope = SERIES * (1 + 1 + 13 + 1 + 4)
    req = conv.requests["acme"]
    assert len(req.timeseries) == SCOPES * per_scope + 1  # + target_info
    assert all(len(ts.samples or ts.histograms) == RECORDS for ts in req.timeseries)
