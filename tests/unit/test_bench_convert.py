"""Speed of the pipelines' conversions: OTLP -> remote write here, OTLP -> Elasticsearch bulk
bodies in ``test_bench_es_docs.py``.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_convert.py --benchmark-enable --benchmark-only
Items/s per core = items per round / mean (the test names say the items per round): metric data
points for remote write (decode, series, protobuf, snappy). The remote-write payload has no exemplars (what
most metrics look like, and what must stay cheap); its twin with an exemplar on every counter and
histogram point prices exemplars.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from pytest_benchmark.fixture import BenchmarkFixture

from pipelines.convert.remote_write import encode, to_write_requests
from tests.otlp_payloads import kv
from tests.otlp_payloads import metrics_request as otlp_metrics_request

pytestmark = pytest.mark.benchmark(group="convert", min_rounds=20)


def _metrics(exemplars: bool = False) -> tuple[bytes, int]:
    """5 kinds x 20 points x 5 scopes = 500 data points, every kind cumulative.

    With ``exemplars``, each sum and (exponential) histogram point gets one, a millisecond apart
    from its neighbours' so none collapse: 300 exemplars.
    """
    req = otlp_metrics_request(points=20, scopes=5)
    points = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.HasField("exponential_histogram"):
                    m.exponential_histogram.aggregation_temporality = \
                        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                data_points = getattr(m, m.WhichOneof("data")).data_points
                points += len(data_points)
                if exemplars and m.WhichOneof("data") in ("sum", "histogram", "exponential_histogram"):
                    for i, dp in enumerate(data_points):
                        dp.exemplars.add(as_double=0.3, time_unix_nano=dp.time_unix_nano + i * 1_000_000,
                                         trace_id=bytes(range(16)), span_id=bytes(range(8)),
                                         filtered_attributes=[kv("user.id", f"u-{i}")])
    return req.SerializeToString(), points


METRICS, METRIC_POINTS = _metrics()
METRICS_EXEMPLARS, _ = _metrics(exemplars=True)


def remote_write_bodies(payload: bytes) -> list[bytes]:
    """What the sink does per batch: convert, then one snappy body per tenant."""
    conv = to_write_requests([(payload, "acme")])
    return [encode(req) for req in conv.requests.values()]


def test_bench_remote_write_500_points_snappy(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = METRIC_POINTS
    bodies = benchmark(remote_write_bodies, METRICS)
    assert METRIC_POINTS == 500 and len(bodies) == 1
    assert not to_write_requests([(METRICS, "acme")]).dropped


def test_bench_remote_write_500_points_300_exemplars_snappy(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = METRIC_POINTS
    bodies = benchmark(remote_write_bodies, METRICS_EXEMPLARS)
    assert len(bodies) == 1
    conv = to_write_requests([(METRICS_EXEMPLARS, "acme")])
    assert sum(len(ts.exemplars) for ts in conv.requests["acme"].timeseries) == 300
    assert not conv.dropped and not conv.dropped_exemplars
