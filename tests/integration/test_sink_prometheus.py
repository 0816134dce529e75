"""Prometheus remote-write sink against a real Prometheus: every SDK instrument kind by PromQL,
scope labels, and exemplars by the exemplar query API."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as otlp
from prometheus_client import REGISTRY

from otlp.signals import Signal
from pipelines.sinks.base import PermanentSinkError
from pipelines.sinks.prometheus import PrometheusSink
from settings.config import PrometheusSinkConfig
from tests import stackenv
from tests.bad_otlp import MARKER, with_invalid_utf8
from tests.integration.sink_checks import assert_write_is_transient
from tests.sdk_otlp import (
    DURATION_VALUES,
    EXEMPLAR_DURATION,
    EXEMPLAR_SIZE,
    PAYLOAD_VALUES,
    SCOPE_SCHEMA_URL,
    bus_record,
    exemplar_metrics_data,
    metrics_payload,
    resource,
)
from tests.waiting import await_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink() -> AsyncIterator[PrometheusSink]:
    stackenv.require("prometheus")
    s = PrometheusSink(PrometheusSinkConfig(url=stackenv.PROMETHEUS_URL + "/api/v1/write"))
    await s.start()
    yield s
    await s.stop()


async def query(promql: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, \
            http.get(stackenv.PROMETHEUS_URL + "/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def one(promql: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        result = await query(promql)
        return result[0] if len(result) == 1 else None
    return await await_for(check, within=20, interval=0.2, what=f"one series for {promql}")


def value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


async def exemplars_of(promql: str, since: float) -> dict[str, Any]:
    """The one series ``promql`` selects in Prometheus' exemplar storage, once it is there."""
    async def check() -> dict[str, Any] | None:
        params = {"query": promql, "start": str(since), "end": str(time.time() + 60)}
        async with aiohttp.ClientSession() as http, \
                http.get(stackenv.PROMETHEUS_URL + "/api/v1/query_exemplars", params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        data: list[dict[str, Any]] = body["data"]
        return data[0] if len(data) == 1 else None
    return await await_for(check, within=20, interval=0.2, what=f"exemplars of {promql}")


async def test_every_instrument_kind_is_queryable_under_its_spec_name(sink: PrometheusSink) -> None:
    tenant = f"it-{uuid.uuid4().hex[:8]}"
    await sink.write([bus_record(Signal.METRICS, metrics_payload(tenant), tenant, offset=1)])
    sel = f'tenant="{tenant}"'

    card = await one(f'orders_total{{{sel},payment_method="card"}}')
    assert value(card) == 5.0
    labels = card["metric"]
    assert labels["job"] == "shop/checkout" and labels["instance"] == "pod-1"
    assert labels["otel_scope_name"] == "sink-tests" and labels["otel_scope_version"] == "1.2.3"
    assert labels["otel_scope_schema_url"] == SCOPE_SCHEMA_URL and labels["otel_scope_test_suite"] == "sinks"
    assert value(await one(f'sum(orders_total{{{sel}}})')) == 7.0
    assert value(await one(f"queue_depth{{{sel}}}")) == 7.0
    cpu = await one(f"cpu_utilization_ratio{{{sel}}}")
    assert value(cpu) == 0.25 and cpu["metric"]["cpu"] == "0"

    assert value(await one(f"http_server_request_duration_seconds_count{{{sel}}}")) == len(DURATION_VALUES)
    total = value(await one(f"http_server_request_duration_seconds_sum{{{sel}}}"))
    assert math.isclose(total, sum(DURATION_VALUES))
    inf = await one(f'http_server_request_duration_seconds_bucket{{{sel},le="+Inf"}}')
    assert value(inf) == len(DURATION_VALUES)
    # Values 0.003, 0.02, 0.02, 0.2, 0.7, 3.0: the median falls in the (0.01, 0.025] bucket.
    p50 = value(await one(
        f"histogram_quantile(0.5, sum by (le) (http_server_request_duration_seconds_bucket{{{sel}}}))"))
    assert 0.01 < p50 <= 0.025
    p99 = value(await one(
        f"histogram_quantile(0.99, sum by (le) (http_server_request_duration_seconds_bucket{{{sel}}}))"))
    assert 2.5 < p99 <= 5.0

    # The exponential histogram arrives as a native histogram.
    assert value(await one(f"histogram_count(payload_size_bytes{{{sel}}})")) == len(PAYLOAD_VALUES)
    assert value(await one(f"histogram_sum(payload_size_bytes{{{sel}}})")) == sum(PAYLOAD_VALUES)
    median = value(await one(f"histogram_quantile(0.5, payload_size_bytes{{{sel}}})"))
    assert 200 <= median <= 800

    info = await one(f"target_info{{{sel}}}")
    assert info["metric"]["deployment_environment"] == "test"
    assert "correlation_id" not in info["metric"]


async def test_exemplars_are_stored_with_the_trace_and_span_of_the_measurement(sink: PrometheusSink) -> None:
    tenant = f"it-ex-{uuid.uuid4().hex[:8]}"
    since = time.time() - 60
    sent = exemplar_metrics_data(resource(tenant))
    name = "pipeline_remote_write_dropped_exemplars_total"
    gauge_drops = REGISTRY.get_sample_value(name, {"reason": "gauge"}) or 0.0
    payload = encode_metrics(sent.data).SerializeToString()
    await sink.write([bus_record(Signal.METRICS, payload, tenant, offset=1)])
    ids = {"trace_id": sent.trace_id, "span_id": sent.span_id}
    sel = f'tenant="{tenant}"'

    counter = await exemplars_of(f"checkouts_total{{{sel}}}", since)
    (ex,) = counter["exemplars"]
    assert ex["labels"] == {**ids, "user_id": "u-42"} and float(ex["value"]) == 1.0

    bucket = await exemplars_of(f"checkout_duration_seconds_bucket{{{sel}}}", since)
    assert bucket["seriesLabels"]["le"] == "0.025"
    (ex,) = bucket["exemplars"]
    assert ex["labels"] == {**ids, "user_id": "u-42"} and float(ex["value"]) == EXEMPLAR_DURATION

    # A native histogram series that did not exist before this request keeps its exemplar.
    native = await exemplars_of(f"checkout_size_bytes{{{sel}}}", since)
    (ex,) = native["exemplars"]
    assert ex["labels"] == ids and float(ex["value"]) == EXEMPLAR_SIZE

    assert (REGISTRY.get_sample_value(name, {"reason": "gauge"}) or 0.0) == gauge_drops + 1  # checkout.queue


async def test_tenants_get_their_own_series_and_requests(sink: PrometheusSink) -> None:
    a, b = f"it-a-{uuid.uuid4().hex[:8]}", f"it-b-{uuid.uuid4().hex[:8]}"
    await sink.write([bus_record(Signal.METRICS, metrics_payload(a), a, offset=1),
                      bus_record(Signal.METRICS, metrics_payload(b, scale=3), b, offset=2)])
    assert value(await one(f'sum(orders_total{{tenant="{a}"}})')) == 7.0
    assert value(await one(f'sum(orders_total{{tenant="{b}"}})')) == 21.0


async def test_refused_old_samples_are_dropped_and_counted_not_retried(sink: PrometheusSink) -> None:
    tenant = f"it-ooo-{uuid.uuid4().hex[:8]}"
    fresh = metrics_payload(tenant)
    await sink.write([bus_record(Signal.METRICS, fresh, tenant, offset=1)])
    await one(f'queue_depth{{tenant="{tenant}"}}')

    # The same series two hours earlier: older than any out-of-order window and the head block,
    # so Prometheus answers 400 (out of order / out of bounds / too old, by its configuration).
    older = ExportMetricsServiceRequest.FromString(fresh)
    for rm in older.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in getattr(m, m.WhichOneof("data")).data_points:
                    dp.time_unix_nano -= 2 * 3600 * 1_000_000_000
    name = "pipeline_remote_write_dropped_samples_total"
    before = sum(REGISTRY.get_sample_value(name, {"reason": r}) or 0.0
                 for r in ("out_of_order", "too_old", "duplicate", "out_of_bounds", "http_400"))
    await sink.write([bus_record(Signal.METRICS, older.SerializeToString(), tenant, offset=2)])  # no raise
    after = sum(REGISTRY.get_sample_value(name, {"reason": r}) or 0.0
                for r in ("out_of_order", "too_old", "duplicate", "out_of_bounds", "http_400"))
    assert after > before
    assert value(await one(f'queue_depth{{tenant="{tenant}"}}')) == 7.0


def _metrics_request(tenant: str, *metrics: otlp.Metric) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="tenant.id").value.string_value = tenant
    rm.resource.attributes.add(key="service.name").value.string_value = "rw-parts"
    rm.scope_metrics.add().metrics.extend(metrics)
    return req


def _gauge(name: str, value: float, ts_ns: int) -> otlp.Metric:
    return otlp.Metric(name=name, gauge=otlp.Gauge(data_points=[
        otlp.NumberDataPoint(time_unix_nano=ts_ns, as_double=value)]))


async def test_a_bad_metric_is_dead_lettered_alone_and_the_good_series_land_once(
        sink: PrometheusSink) -> None:
    """One record: a good request and one whose second metric's name is not UTF-8."""
    tenant = f"it-parts-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    good = _metrics_request(tenant, _gauge("parts_good", 1.0, now)).SerializeToString()
    req = _metrics_request(tenant, _gauge("parts_sibling", 2.0, now), _gauge("x", 3.0, now))
    bad_metric = req.resource_metrics[0].scope_metrics[0].metrics[1]
    bad = with_invalid_utf8(req, lambda m: setattr(bad_metric, "name", m))
    record = bus_record(Signal.METRICS, good + bad, tenant, offset=5)
    for _attempt in range(2):  # a redelivery rejects the same part and adds no sample
        with pytest.raises(PermanentSinkError) as err:
            await sink.write([record])
        (rej,) = err.value.rejected
        assert rej.record is record and rej.part is not None and "malformed OTLP" in rej.reason
        assert MARKER.encode()[1:] in rej.value and b"parts_sibling" not in rej.value
    sel = f'tenant="{tenant}"'
    assert value(await one(f"count_over_time(parts_good{{{sel}}}[10m])")) == 1
    assert value(await one(f"count_over_time(parts_sibling{{{sel}}}[10m])")) == 1
    assert value(await one(f"parts_sibling{{{sel}}}")) == 2.0


async def test_inf_is_the_count_and_a_stale_native_histogram_ends_the_series(sink: PrometheusSink) -> None:
    tenant = f"it-stale-{uuid.uuid4().hex[:8]}"
    sel = f'tenant="{tenant}"'
    now = time.time_ns() - 5_000_000_000
    cumulative = otlp.AGGREGATION_TEMPORALITY_CUMULATIVE

    def points(ts_ns: int, flags: int = 0) -> list[otlp.Metric]:
        return [
            otlp.Metric(name="short_buckets", histogram=otlp.Histogram(
                aggregation_temporality=cumulative, data_points=[otlp.HistogramDataPoint(
                    time_unix_nano=ts_ns, count=5, sum=7.5, explicit_bounds=[1.0, 2.0],
                    bucket_counts=[1, 2], flags=flags)])),
            otlp.Metric(name="native", exponential_histogram=otlp.ExponentialHistogram(
                aggregation_temporality=cumulative, data_points=[otlp.ExponentialHistogramDataPoint(
                    time_unix_nano=ts_ns, scale=0, count=3, sum=6.0, zero_count=1, flags=flags,
                    positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2]))])),
        ]

    first = _metrics_request(tenant, *points(now)).SerializeToString()
    await sink.write([bus_record(Signal.METRICS, first, tenant, offset=1)])
    assert value(await one(f'short_buckets_bucket{{{sel},le="+Inf"}}')) == 5.0
    assert value(await one(f"histogram_count(native{{{sel}}})")) == 3.0

    no_value = otlp.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    stale = _metrics_request(tenant, *points(now + 1_000_000_000, no_value))
    await sink.write([bus_record(Signal.METRICS, stale.SerializeToString(), tenant, offset=2)])

    async def gone() -> bool:
        return not await query(f"native{{{sel}}}") and not await query(f"short_buckets_bucket{{{sel}}}")
    await await_for(gone, within=20, interval=0.2, what="the stale markers to end both series")


async def test_unreachable_endpoint_is_transient() -> None:
    await assert_write_is_transient(
        PrometheusSink(PrometheusSinkConfig(url="http://127.0.0.1:1/api/v1/write", timeout_s=2)),
        [bus_record(Signal.METRICS, metrics_payload("acme"), "acme", offset=1)])


def _kvs(attrs: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]


async def test_spec_corners_of_names_and_labels_as_prometheus_stores_them(sink: PrometheusSink) -> None:
    """Names and labels Prometheus holds for the corners of the spec's naming rules (issue 16):
    ``_ratio`` on a gauge in ``1`` only, label names with a leading ``_``, a non-ASCII letter, a
    run of invalid characters, a leading digit; the scope schema URL; sanitised exemplar labels."""
    tenant = f"it-names-{uuid.uuid4().hex[:8]}"
    sel = f'tenant="{tenant}"'
    now = time.time_ns() - 2_000_000_000
    cumulative = otlp.AGGREGATION_TEMPORALITY_CUMULATIVE
    attrs = _kvs({"_private": "p", "ügyfél": "u", "a..b": "c", "2xx": "d"})
    util = otlp.Metric(name="corner.utilization", unit="1", gauge=otlp.Gauge(data_points=[
        otlp.NumberDataPoint(time_unix_nano=now, as_double=0.5, attributes=attrs)]))
    fill = otlp.Metric(name="corner.fill", unit="1", sum=otlp.Sum(
        aggregation_temporality=cumulative, is_monotonic=False, data_points=[
            otlp.NumberDataPoint(time_unix_nano=now, as_double=0.25)]))
    hits = otlp.Metric(name="corner.hits", unit="1", sum=otlp.Sum(
        aggregation_temporality=cumulative, is_monotonic=True, data_points=[otlp.NumberDataPoint(
            time_unix_nano=now, as_int=3, exemplars=[otlp.Exemplar(
                time_unix_nano=now, as_int=1, trace_id=bytes(range(16)), span_id=bytes(range(8)),
                filtered_attributes=_kvs({"user.id": "u-1", "_debug": "1", "ügy": "x"}))])]))
    req = _metrics_request(tenant, util, fill, hits)
    sm = req.resource_metrics[0].scope_metrics[0]
    sm.scope.name, sm.scope.version = "corner-lib", "1.0"
    sm.scope.attributes.extend(_kvs({"_team": "core"}))
    sm.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    since = time.time() - 60
    await sink.write([bus_record(Signal.METRICS, req.SerializeToString(), tenant, offset=1)])

    got = (await one(f"corner_utilization_ratio{{{sel}}}"))["metric"]
    assert {k: got[k] for k in ("_private", "_gyf_l", "a_b", "key_2xx")} == \
        {"_private": "p", "_gyf_l": "u", "a_b": "c", "key_2xx": "d"}
    assert got["otel_scope_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"
    assert got["otel_scope_team"] == "core" and got["otel_scope_name"] == "corner-lib"
    assert value(await one(f"corner_fill{{{sel}}}")) == 0.25  # a non-monotonic sum: no _ratio
    assert not await query(f"corner_fill_ratio{{{sel}}}")
    assert value(await one(f"corner_hits_total{{{sel}}}")) == 3.0
    (ex,) = (await exemplars_of(f"corner_hits_total{{{sel}}}", since))["exemplars"]
    assert ex["labels"] == {"trace_id": bytes(range(16)).hex(), "span_id": bytes(range(8)).hex(),
                            "user_id": "u-1", "_debug": "1", "_gy": "x"}


async def test_native_histogram_point_without_a_sum_is_not_stored_and_is_counted(
        sink: PrometheusSink) -> None:
    tenant = f"it-nosum-{uuid.uuid4().hex[:8]}"
    sel = f'tenant="{tenant}"'
    now = time.time_ns() - 2_000_000_000

    def point(p: str) -> otlp.ExponentialHistogramDataPoint:
        return otlp.ExponentialHistogramDataPoint(
            time_unix_nano=now, scale=0, count=3, zero_count=1, attributes=_kvs({"p": p}),
            positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2]))
    with_sum = point("with_sum")
    with_sum.sum = 6.0
    m = otlp.Metric(name="nosum_native", exponential_histogram=otlp.ExponentialHistogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[point("without_sum"), with_sum]))
    name = "pipeline_remote_write_dropped_samples_total"
    before = REGISTRY.get_sample_value(name, {"reason": "missing_sum"}) or 0.0
    record = bus_record(Signal.METRICS, _metrics_request(tenant, m).SerializeToString(), tenant, offset=1)
    await sink.write([record])
    # Both points rode in one request, which Prometheus appends in one commit: once the one with
    # a sum is visible, the other would be too had it been written.
    assert value(await one(f'histogram_sum(nosum_native{{{sel},p="with_sum"}})')) == 6.0
    assert [s["metric"]["p"] for s in await query(f"nosum_native{{{sel}}}")] == ["with_sum"]
    assert REGISTRY.get_sample_value(name, {"reason": "missing_sum"}) == before + 1
