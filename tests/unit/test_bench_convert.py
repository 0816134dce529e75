"""Speed of the pipelines' conversions: OTLP -> Elasticsearch bulk bodies, OTLP -> remote write.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_convert.py --benchmark-enable --benchmark-only
Items/s per core = items per round / mean (the test names say the items per round): spans or
log records for Elasticsearch (decode, documents, JSON, NDJSON body), metric data points for
remote write (decode, series, protobuf, snappy).
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from pytest_benchmark.fixture import BenchmarkFixture

from gateway.signals import Signal
from pipelines.convert.es_docs import bulk_body, bulk_items
from pipelines.convert.remote_write import encode, to_write_requests
from tests.otlp_payloads import logs_request, traces_request
from tests.otlp_payloads import metrics_request as otlp_metrics_request
from tests.sdk_otlp import bus_record

pytestmark = pytest.mark.benchmark(group="convert", min_rounds=20)

ITEMS = 512
SPANS = bus_record(Signal.TRACES, traces_request(spans_per_request=ITEMS, attributes=10).SerializeToString(),
                   "acme", offset=1)
LOGS = bus_record(Signal.LOGS, logs_request(records=ITEMS, attributes=6).SerializeToString(),
                  "acme", offset=1)


def _metrics() -> tuple[bytes, int]:
    """5 kinds x 20 points x 5 scopes = 500 data points, every kind cumulative."""
    req = otlp_metrics_request(points=20, scopes=5)
    points = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.HasField("exponential_histogram"):
                    m.exponential_histogram.aggregation_temporality = \
                        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                points += len(getattr(m, m.WhichOneof("data")).data_points)
    return req.SerializeToString(), points


METRICS, METRIC_POINTS = _metrics()


def test_bench_es_bulk_body_512_spans(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    body = benchmark(lambda: bulk_body(bulk_items(SPANS)))
    assert body.count(b"\n") == 2 * ITEMS


def test_bench_es_bulk_body_512_logs(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    body = benchmark(lambda: bulk_body(bulk_items(LOGS)))
    assert body.count(b"\n") == 2 * ITEMS


def test_bench_remote_write_500_points_snappy(benchmark: BenchmarkFixture) -> None:
    def convert() -> list[bytes]:
        conv = to_write_requests([(METRICS, "acme")])
        return [encode(req) for req in conv.requests.values()]

    benchmark.extra_info["items"] = METRIC_POINTS
    bodies = benchmark(convert)
    assert METRIC_POINTS == 500 and len(bodies) == 1
    assert not to_write_requests([(METRICS, "acme")]).dropped

