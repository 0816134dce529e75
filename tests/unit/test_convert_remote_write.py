"""OTLP metrics -> remote-write: every metric kind, names, labels, units, native histograms,
instrumentation scope labels and exemplars."""

from __future__ import annotations

import math
import struct

import cramjam
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as otlp

from pipelines.convert.prom_names import Kind, format_bound, label_name, metric_name, unit_word
from pipelines.convert.remote_write import (
    EXEMPLAR_LABELS_MAX,
    STALE_NAN,
    encode,
    exemplar_labels,
    native_histogram,
    to_write_requests,
)
from protos import remote_pb2, types_pb2
from tests.bad_otlp import MARKER, with_invalid_utf8
from tests.sdk_otlp import (
    DURATION_BOUNDS,
    DURATION_VALUES,
    EXEMPLAR_DURATION,
    EXEMPLAR_SIZE,
    PAYLOAD_VALUES,
    SCOPE_SCHEMA_URL,
    exemplar_metrics_data,
    metrics_payload,
    resource,
)

TS_NS = 1_700_000_000_000_000_000
TS_MS = TS_NS // 1_000_000


def series(req: remote_pb2.WriteRequest) -> dict[tuple[tuple[str, str], ...], types_pb2.TimeSeries]:
    return {tuple((lb.name, lb.value) for lb in ts.labels): ts for ts in req.timeseries}


def by_name(req: remote_pb2.WriteRequest, name: str) -> list[tuple[dict[str, str], types_pb2.TimeSeries]]:
    out = []
    for ts in req.timeseries:
        labels = {lb.name: lb.value for lb in ts.labels}
        if labels["__name__"] == name:
            out.append((labels, ts))
    return out


def kvs(attrs: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]


def one_metric_request(metric: otlp.Metric, tenant: str = "acme",
                       resource: dict[str, str] | None = None) -> bytes:
    return scopes_request([(otlp.ScopeMetrics(scope=InstrumentationScope(name="lib")), [metric])],
                          tenant, resource)


def scopes_request(scopes: list[tuple[otlp.ScopeMetrics, list[otlp.Metric]]], tenant: str = "acme",
                   resource: dict[str, str] | None = None) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(kvs({"service.name": "svc", "tenant.id": tenant, **(resource or {})}))
    for sm, metrics in scopes:
        added = rm.scope_metrics.add()
        added.CopyFrom(sm)
        added.metrics.extend(metrics)
    return req.SerializeToString()


def gauge(name: str = "g", value: float = 1.0) -> otlp.Metric:
    return otlp.Metric(name=name, gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
        time_unix_nano=TS_NS, as_double=value)]))


# --- names -----------------------------------------------------------------------------------

def test_metric_names_follow_the_spec() -> None:
    assert metric_name("http.server.request.duration", "s", Kind.HISTOGRAM) == \
        "http_server_request_duration_seconds"
    assert metric_name("orders", "{order}", Kind.COUNTER) == "orders_total"
    assert metric_name("orders.total", "", Kind.COUNTER) == "orders_total"
    assert metric_name("cpu.utilization", "1", Kind.GAUGE) == "cpu_utilization_ratio"
    assert metric_name("hits", "1", Kind.COUNTER) == "hits_total"
    assert metric_name("queue.depth", "{item}", Kind.GAUGE) == "queue_depth"
    assert metric_name("memory.usage", "By", Kind.GAUGE) == "memory_usage_bytes"
    assert metric_name("memory.usage.bytes", "By", Kind.GAUGE) == "memory_usage_bytes"
    assert metric_name("net.io", "By", Kind.COUNTER) == "net_io_bytes_total"
    assert metric_name("speed", "m/s", Kind.GAUGE) == "speed_meters_per_second"
    assert metric_name("rate", "{req}/s", Kind.GAUGE) == "rate_per_second"
    assert metric_name("latency", "ms", Kind.SUMMARY) == "latency_milliseconds"
    assert metric_name("temp", "Cel", Kind.GAUGE) == "temp_celsius"
    assert metric_name("weird-name!!x", "", Kind.GAUGE) == "weird_name_x"
    assert metric_name("2xx.count", "", Kind.GAUGE) == "_2xx_count"
    assert metric_name("ns:metric", "", Kind.GAUGE) == "ns:metric"
    assert metric_name("custom", "furlongs", Kind.GAUGE) == "custom_furlongs"


def test_label_names_follow_the_spec() -> None:
    assert label_name("http.request.method") == "http_request_method"
    assert label_name("2xx") == "key_2xx"
    assert label_name("a-b/c") == "a_b_c"
    assert label_name("") == "key_"


def test_a_leading_underscore_stays_and_underscore_runs_collapse() -> None:
    # The spec (and otlptranslator since the Collector's PermissiveLabelSanitization) keep a
    # single leading "_"; runs of "_" become one, which also keeps "__" (reserved) out of reach.
    keys = ("_private", "a..b", "a__b", "__reserved__", "__name__", "label!with&special$chars)")
    assert [label_name(k) for k in keys] == \
        ["_private", "a_b", "a_b", "_reserved_", "_name_", "label_with_special_chars_"]


def test_non_ascii_letters_are_invalid_characters() -> None:
    assert {k: label_name(k) for k in ("ügyfél", "city.名", "ようこそ", "x_é_y")} == \
        {"ügyfél": "_gyf_l", "city.名": "city_", "ようこそ": "_", "x_é_y": "x_y"}


def test_unit_words_follow_the_spec_table() -> None:
    words = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "kBy": "kilobytes",
             "TiBy": "tebibytes", "By/s": "bytes_per_second", "m/s": "meters_per_second",
             "{request}": "", "{req}/s": "per_second", "1": "", "%": "percent",
             "furlongs": "furlongs", "": ""}
    assert {unit: unit_word(unit) for unit in words} == words


def test_ratio_goes_on_gauges_only() -> None:
    assert metric_name("cpu.utilization", "1", Kind.GAUGE) == "cpu_utilization_ratio"
    assert metric_name("cpu.ratio.used", "1", Kind.GAUGE) == "cpu_used_ratio"  # moved last, once
    assert metric_name("pool.fill", "1", Kind.UPDOWN) == "pool_fill"
    assert metric_name("hits", "1", Kind.COUNTER) == "hits_total"
    assert metric_name("fill", "1", Kind.HISTOGRAM) == "fill"
    assert metric_name("fill", "1", Kind.SUMMARY) == "fill"
    assert metric_name("rate", "1/s", Kind.GAUGE) == "rate_per_second"


def test_bounds_print_like_prometheus() -> None:
    assert format_bound(0.005) == "0.005"
    assert format_bound(1.0) == "1"
    assert format_bound(1e-05) == "0.00001"
    assert format_bound(2.5) == "2.5"
    assert format_bound(math.inf) == "+Inf"
    assert format_bound(-math.inf) == "-Inf"


# --- SDK output: every instrument kind ----------------------------------------------------------

def test_sdk_instruments_convert_under_spec_names_with_resource_labels() -> None:
    conv = to_write_requests([(metrics_payload("acme"), "ignored-header-tenant")])
    assert set(conv.requests) == {"acme"}
    req = conv.requests["acme"]
    assert not conv.dropped
    assert conv.samples["acme"] == len(req.timeseries)  # one sample or histogram per series here

    common = {"job": "shop/checkout", "instance": "pod-1", "tenant": "acme",
              "otel_scope_name": "sink-tests", "otel_scope_version": "1.2.3",
              "otel_scope_schema_url": SCOPE_SCHEMA_URL, "otel_scope_test_suite": "sinks"}
    counters = {labels["payment_method"]: ts.samples[0].value for labels, ts in by_name(req, "orders_total")}
    assert counters == {"card": 5.0, "cash": 2.0}
    for labels, _ in by_name(req, "orders_total"):
        assert common.items() <= labels.items()

    ((_, depth),) = by_name(req, "queue_depth")
    assert depth.samples[0].value == 7.0
    ((cpu_labels, cpu),) = by_name(req, "cpu_utilization_ratio")
    assert cpu.samples[0].value == 0.25 and cpu_labels["cpu"] == "0"

    buckets = {labels["le"]: ts.samples[0].value
               for labels, ts in by_name(req, "http_server_request_duration_seconds_bucket")}
    assert set(buckets) == {format_bound(b) for b in DURATION_BOUNDS} | {"+Inf"}
    assert buckets["0.005"] == 1 and buckets["0.025"] == 3 and buckets["0.25"] == 4
    assert buckets["1"] == 5 and buckets["5"] == 6 and buckets["+Inf"] == 6
    ((_, count),) = by_name(req, "http_server_request_duration_seconds_count")
    ((_, total),) = by_name(req, "http_server_request_duration_seconds_sum")
    assert count.samples[0].value == 6
    assert math.isclose(total.samples[0].value, sum(DURATION_VALUES))

    ((_, native),) = by_name(req, "payload_size_bytes")
    (h,) = native.histograms
    assert not native.samples
    assert h.count_int == len(PAYLOAD_VALUES) and h.sum == sum(PAYLOAD_VALUES)
    assert h.zero_count_int == 1
    assert -4 <= h.schema <= 8
    counts, acc = [], 0
    for d in h.positive_deltas:
        acc += d
        counts.append(acc)
    assert sum(counts) == 5

    ((info_labels, info),) = by_name(req, "target_info")
    assert info.samples[0].value == 1.0
    assert info_labels["deployment_environment"] == "test"
    assert info_labels["job"] == "shop/checkout" and info_labels["tenant"] == "acme"
    assert "correlation_id" not in info_labels and "tenant_id" not in info_labels
    assert "service_name" not in info_labels
    assert not [n for n in info_labels if n.startswith("otel_scope_")]
    # Recorded outside any span: the SDK attaches no exemplars, and none appear here.
    assert not any(ts.exemplars for ts in req.timeseries)
    assert not conv.dropped_exemplars and not conv.dropped_exemplar_labels

    types = {m.metric_family_name: m.type for m in req.metadata}
    assert types["orders_total"] == types_pb2.MetricMetadata.COUNTER
    assert types["queue_depth"] == types_pb2.MetricMetadata.GAUGE
    assert types["http_server_request_duration_seconds"] == types_pb2.MetricMetadata.HISTOGRAM
    assert types["payload_size_bytes"] == types_pb2.MetricMetadata.HISTOGRAM


def test_every_series_has_sorted_unique_labels_and_the_tenant() -> None:
    conv = to_write_requests([(metrics_payload("acme"), ""), (metrics_payload("beta", scale=2), "")])
    assert set(conv.requests) == {"acme", "beta"}
    for tenant, req in conv.requests.items():
        for ts in req.timeseries:
            names = [lb.name for lb in ts.labels]
            assert names == sorted(names) and len(set(names)) == len(names)
            assert dict((lb.name, lb.value) for lb in ts.labels)["tenant"] == tenant
            assert all(lb.value for lb in ts.labels)


def test_samples_of_one_series_are_merged_and_time_ordered() -> None:
    def gauge(ts_ns: int, value: float) -> bytes:
        m = otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
            time_unix_nano=ts_ns, as_double=value)]))
        return one_metric_request(m)
    conv = to_write_requests([(gauge(TS_NS + 2_000_000, 2.0), ""), (gauge(TS_NS, 1.0), "")])
    ((_, ts),) = by_name(conv.requests["acme"], "g")
    assert [(s.timestamp, s.value) for s in ts.samples] == [(TS_MS, 1.0), (TS_MS + 2, 2.0)]


# --- hand-built OTLP: what the SDK does not emit -----------------------------------------------

def test_monotonic_int_sum_is_a_counter_non_monotonic_a_gauge() -> None:
    mono = otlp.Metric(name="requests", unit="{request}", sum=otlp.Sum(
        is_monotonic=True, aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_int=12)]))
    updown = otlp.Metric(name="active", unit="{conn}", sum=otlp.Sum(
        is_monotonic=False, aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_int=-3)]))
    conv = to_write_requests([(one_metric_request(mono), ""), (one_metric_request(updown), "")])
    req = conv.requests["acme"]
    ((labels, ts),) = by_name(req, "requests_total")
    assert ts.samples[0].value == 12.0 and ts.samples[0].timestamp == TS_MS
    assert labels["job"] == "svc" and "instance" not in labels and labels["otel_scope_name"] == "lib"
    ((_, ts),) = by_name(req, "active")
    assert ts.samples[0].value == -3.0


def test_delta_temporality_is_dropped_and_counted() -> None:
    delta = otlp.Metric(name="requests", sum=otlp.Sum(
        is_monotonic=True, aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_DELTA,
        data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_int=1)] * 3))
    dhist = otlp.Metric(name="lat", histogram=otlp.Histogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_DELTA,
        data_points=[otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=1)]))
    conv = to_write_requests([(one_metric_request(delta), ""), (one_metric_request(dhist), "")])
    assert conv.dropped["delta_temporality"] == 4
    assert not conv.requests["acme"].timeseries


def test_summary_becomes_quantiles_sum_count() -> None:
    m = otlp.Metric(name="rpc.duration", unit="ms", summary=otlp.Summary(data_points=[otlp.SummaryDataPoint(
        time_unix_nano=TS_NS, count=10, sum=123.0,
        quantile_values=[otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=10.0),
                         otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=40.0)])]))
    req = to_write_requests([(one_metric_request(m), "")]).requests["acme"]
    q = {labels["quantile"]: ts.samples[0].value for labels, ts in by_name(req, "rpc_duration_milliseconds")}
    assert q == {"0.5": 10.0, "0.99": 40.0}
    assert by_name(req, "rpc_duration_milliseconds_sum")[0][1].samples[0].value == 123.0
    assert by_name(req, "rpc_duration_milliseconds_count")[0][1].samples[0].value == 10.0
    assert {m.metric_family_name: m.type for m in req.metadata}["rpc_duration_milliseconds"] == \
        types_pb2.MetricMetadata.SUMMARY


def test_histogram_without_buckets_has_only_inf() -> None:
    m = otlp.Metric(name="h", histogram=otlp.Histogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=4, sum=2.0)]))
    req = to_write_requests([(one_metric_request(m), "")]).requests["acme"]
    assert [(lb["le"], ts.samples[0].value) for lb, ts in by_name(req, "h_bucket")] == [("+Inf", 4.0)]


def test_no_recorded_value_becomes_a_stale_marker() -> None:
    m = otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
        time_unix_nano=TS_NS, as_double=5.0, flags=otlp.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)]))
    req = to_write_requests([(one_metric_request(m), "")]).requests["acme"]
    value = by_name(req, "g")[0][1].samples[0].value
    assert struct.pack("<d", value) == struct.pack("<d", STALE_NAN)


def test_attribute_collisions_join_values_and_cannot_override_the_tenant() -> None:
    dp = otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=1.0, attributes=[
        KeyValue(key="a.b", value=AnyValue(string_value="1")),
        KeyValue(key="a-b", value=AnyValue(string_value="2")),
        KeyValue(key="tenant", value=AnyValue(string_value="evil")),
        KeyValue(key="flag", value=AnyValue(bool_value=True)),
        KeyValue(key="n", value=AnyValue(int_value=3)),
        KeyValue(key="empty", value=AnyValue(string_value="")),
    ])
    m = otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[dp]))
    ((labels, _),) = by_name(to_write_requests([(one_metric_request(m), "")]).requests["acme"], "g")
    assert labels["a_b"] == "2;1"  # sorted by original key: "a-b" < "a.b"
    assert labels["tenant"] == "acme"
    assert labels["flag"] == "true" and labels["n"] == "3"
    assert "empty" not in labels


def test_header_tenant_is_the_fallback_without_resource_tenant() -> None:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    sm.metrics.append(otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
        time_unix_nano=TS_NS, as_double=1.0)])))
    assert set(to_write_requests([(req.SerializeToString(), "hdr")]).requests) == {"hdr"}
    assert set(to_write_requests([(req.SerializeToString(), "")]).requests) == {"default"}


def test_native_histogram_shifts_index_and_delta_encodes() -> None:
    dp = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, count=10, sum=50.0, scale=3, zero_count=1, zero_threshold=1e-9,
        positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=-2, bucket_counts=[2, 0, 5]),
        negative=otlp.ExponentialHistogramDataPoint.Buckets(offset=4, bucket_counts=[2]),
    )
    h = native_histogram(dp, TS_MS)
    assert h is not None
    assert h.schema == 3 and h.count_int == 10 and h.sum == 50.0
    assert h.zero_count_int == 1 and h.zero_threshold == 1e-9
    assert [(s.offset, s.length) for s in h.positive_spans] == [(-1, 3)]
    assert list(h.positive_deltas) == [2, -2, 5]
    assert [(s.offset, s.length) for s in h.negative_spans] == [(5, 1)]
    assert list(h.negative_deltas) == [2]
    assert h.timestamp == TS_MS


def test_native_histogram_downscales_above_schema_8_and_drops_below_minus_4() -> None:
    dp = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, count=6, scale=10,
        positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=3, bucket_counts=[1, 1, 1, 1, 1, 1]))
    h = native_histogram(dp, TS_MS)
    assert h is not None and h.schema == 8
    # indices 3..8 at scale 10 -> 0,1,1,1,1,2 at scale 8 (i >> 2): counts [1, 4, 1] from index 0.
    assert [(s.offset, s.length) for s in h.positive_spans] == [(1, 3)]
    assert list(h.positive_deltas) == [1, 3, -3]
    low = otlp.Metric(name="e", exponential_histogram=otlp.ExponentialHistogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.ExponentialHistogramDataPoint(time_unix_nano=TS_NS, scale=-5, count=1, sum=1.0)]))
    conv = to_write_requests([(one_metric_request(low), "")])
    assert conv.dropped["unsupported_scale"] == 1


def test_encode_is_snappy_block_of_the_protobuf() -> None:
    req = to_write_requests([(metrics_payload("acme"), "")]).requests["acme"]
    body = encode(req)
    assert remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body))) == req


# --- instrumentation scope ---------------------------------------------------------------------

def test_scope_name_version_schema_url_and_attributes_label_every_series() -> None:
    schema_url = "https://opentelemetry.io/schemas/1.26.0"
    scope = otlp.ScopeMetrics(schema_url=schema_url, scope=InstrumentationScope(
        name="io.acme.lib", version="2.0.1", attributes=kvs({
            "team.owner": "payments", "a.b": "1", "a-b": "2",
            # Would become otel_scope_name / _version / _schema_url: the spec drops them.
            "name": "shadow", "version": "shadow", "schema_url": "shadow", "schema.url": "shadow"})))
    hist = otlp.Metric(name="h", histogram=otlp.Histogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=1, explicit_bounds=[1.0],
                                             bucket_counts=[1, 0])]))
    req = to_write_requests([(scopes_request([(scope, [gauge(), hist])]), "")]).requests["acme"]
    want = {"otel_scope_name": "io.acme.lib", "otel_scope_version": "2.0.1",
            "otel_scope_schema_url": schema_url,
            "otel_scope_team_owner": "payments",
            "otel_scope_a_b": "2;1"}  # keys that sanitise alike join, ordered by the original key
    for name in ("g", "h_bucket", "h_count"):
        for labels, _ in by_name(req, name):
            assert {n: v for n, v in labels.items() if n.startswith("otel_scope_")} == want, name


def test_scope_without_version_or_schema_url_adds_no_empty_labels() -> None:
    scope = otlp.ScopeMetrics(scope=InstrumentationScope(name="lib"))
    req = to_write_requests([(scopes_request([(scope, [gauge()])]), "")]).requests["acme"]
    ((labels, _),) = by_name(req, "g")
    assert {n for n in labels if n.startswith("otel_scope_")} == {"otel_scope_name"}


def test_scopes_differing_in_an_attribute_stay_apart_and_target_info_stays_one() -> None:
    def shard(n: str) -> otlp.ScopeMetrics:
        return otlp.ScopeMetrics(scope=InstrumentationScope(name="lib", version="1",
                                                            attributes=kvs({"shard": n})))
    payload = scopes_request([(shard("1"), [gauge(value=1.0)]), (shard("2"), [gauge(value=2.0)])],
                             resource={"host.name": "h1"})
    req = to_write_requests([(payload, "")]).requests["acme"]
    assert sorted((lb["otel_scope_shard"], ts.samples[0].value) for lb, ts in by_name(req, "g")) == \
        [("1", 1.0), ("2", 2.0)]
    ((info, _),) = by_name(req, "target_info")  # it describes the resource, not a scope
    assert info == {"__name__": "target_info", "host_name": "h1", "job": "svc", "tenant": "acme"}


# --- exemplars -------------------------------------------------------------------------------

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def otlp_exemplar(value: float, ts_ns: int = TS_NS, attrs: dict[str, str] | None = None) -> otlp.Exemplar:
    return otlp.Exemplar(as_double=value, time_unix_nano=ts_ns, trace_id=TRACE_ID, span_id=SPAN_ID,
                         filtered_attributes=kvs(attrs or {}))


def labels_of(ex: types_pb2.Exemplar) -> dict[str, str]:
    return {lb.name: lb.value for lb in ex.labels}


def counter_with(*exemplars: otlp.Exemplar) -> otlp.Metric:
    return otlp.Metric(name="requests", sum=otlp.Sum(
        is_monotonic=True, aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_int=3, exemplars=exemplars)]))


def test_sdk_exemplars_land_on_the_counter_the_bucket_and_the_native_histogram() -> None:
    sent = exemplar_metrics_data(resource("acme"))
    conv = to_write_requests([(encode_metrics(sent.data).SerializeToString(), "")])
    req = conv.requests["acme"]
    ids = {"trace_id": sent.trace_id, "span_id": sent.span_id}

    ((_, counter),) = by_name(req, "checkouts_total")
    (ex,) = counter.exemplars
    assert labels_of(ex) == {**ids, "user_id": "u-42"} and ex.value == 1.0 and ex.timestamp > 0

    buckets = by_name(req, "checkout_duration_seconds_bucket")
    with_exemplars = {lb["le"]: list(ts.exemplars) for lb, ts in buckets if ts.exemplars}
    assert list(with_exemplars) == ["0.025"]  # 0.02 falls in (0.01, 0.025]
    (ex,) = with_exemplars["0.025"]
    assert labels_of(ex) == {**ids, "user_id": "u-42"} and ex.value == EXEMPLAR_DURATION

    # The native histogram's exemplars follow in a second entry with the same labels, after the
    # entry that carries the histogram (a receiver needs the series before its exemplars).
    entries = [(i, ts) for i, ts in enumerate(req.timeseries)
               if {lb.name: lb.value for lb in ts.labels}["__name__"] == "checkout_size_bytes"]
    ((i_hist, hist), (i_ex, only_ex)) = entries
    assert i_hist < i_ex and hist.labels == only_ex.labels
    assert len(hist.histograms) == 1 and not hist.exemplars
    assert not only_ex.histograms and not only_ex.samples
    (ex,) = only_ex.exemplars
    assert labels_of(ex) == ids and ex.value == EXEMPLAR_SIZE

    ((_, queue),) = by_name(req, "checkout_queue")  # an up-down counter is a gauge: no exemplars
    assert not queue.exemplars
    assert conv.dropped_exemplars == {"gauge": 1}
    assert conv.samples["acme"] == sum(len(ts.samples) + len(ts.histograms) for ts in req.timeseries)


def test_classic_bucket_exemplars_fall_under_their_le() -> None:
    values = (0.5, 1.0, 3.0, 5.0, 7.0)
    hist = otlp.Metric(name="h", histogram=otlp.Histogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.HistogramDataPoint(
            time_unix_nano=TS_NS, count=5, explicit_bounds=[1.0, 5.0], bucket_counts=[2, 2, 1],
            exemplars=[otlp_exemplar(v, TS_NS + i * 1_000_000) for i, v in enumerate(values)])]))
    req = to_write_requests([(one_metric_request(hist), "")]).requests["acme"]
    got = {lb["le"]: [e.value for e in ts.exemplars] for lb, ts in by_name(req, "h_bucket")}
    # Bounds are inclusive, as in OTLP and in ``le``.
    assert got == {"1": [0.5, 1.0], "5": [3.0, 5.0], "+Inf": [7.0]}

    no_buckets = otlp.Metric(name="n", histogram=otlp.Histogram(
        aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=1, exemplars=[otlp_exemplar(2.0)])]))
    req = to_write_requests([(one_metric_request(no_buckets), "")]).requests["acme"]
    assert [(lb["le"], len(ts.exemplars)) for lb, ts in by_name(req, "n_bucket")] == [("+Inf", 1)]


def test_exemplars_of_gauges_and_non_monotonic_sums_are_dropped_and_counted() -> None:
    g = otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
        time_unix_nano=TS_NS, as_double=1.0, exemplars=[otlp_exemplar(1.0)])]))
    updown = otlp.Metric(name="active", sum=otlp.Sum(
        is_monotonic=False, aggregation_temporality=otlp.AGGREGATION_TEMPORALITY_CUMULATIVE,
        data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_int=2,
                                          exemplars=[otlp_exemplar(1.0), otlp_exemplar(1.0, TS_NS + 1)])]))
    conv = to_write_requests([(one_metric_request(g), ""), (one_metric_request(updown), "")])
    assert not any(ts.exemplars for ts in conv.requests["acme"].timeseries)
    assert conv.dropped_exemplars == {"gauge": 3}


def test_exemplar_label_set_stays_within_the_openmetrics_limit() -> None:
    # trace_id + 32 hex and span_id + 16 hex: 63 characters, leaving 65 for attributes.
    ex = otlp_exemplar(1.0, attrs={"trace_id": "forged", "a": "x" * 40, "b": "y" * 30, "c": "é" * 20})
    pairs, left_off = exemplar_labels(ex)
    labels = dict(pairs)
    # Name order: "a" (41) fits, "b" (31) would make 135 and is left off, "c" (21 code points,
    # 41 bytes) fits; the ids win over the attribute named trace_id.
    assert labels == {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex(), "a": "x" * 40, "c": "é" * 20}
    assert left_off == 1
    assert sum(len(n) + len(v) for n, v in labels.items()) <= EXEMPLAR_LABELS_MAX

    conv = to_write_requests([(one_metric_request(counter_with(ex)), "")])
    assert conv.dropped_exemplar_labels == 1
    (written,) = by_name(conv.requests["acme"], "requests_total")[0][1].exemplars
    assert [(lb.name, lb.value) for lb in written.labels] == pairs
    assert written.value == 1.0 and written.timestamp == TS_MS


def test_exemplars_go_oldest_first_one_per_millisecond() -> None:
    point = one_metric_request(counter_with(
        otlp_exemplar(3.0, TS_NS + 3_000_000),
        otlp_exemplar(1.0, TS_NS + 1_000_500),
        otlp_exemplar(2.0, TS_NS + 1_000_000),  # same millisecond, earlier: the later one stays
        otlp.Exemplar(as_int=4, time_unix_nano=TS_NS + 5_000_000),  # no trace: no id labels
    ))
    conv = to_write_requests([(point, "")])
    ((_, ts),) = by_name(conv.requests["acme"], "requests_total")
    assert [(e.timestamp, e.value) for e in ts.exemplars] == \
        [(TS_MS + 1, 1.0), (TS_MS + 3, 3.0), (TS_MS + 5, 4.0)]
    assert not ts.exemplars[-1].labels
    assert conv.dropped_exemplars == {"same_millisecond": 1}

    resent = one_metric_request(counter_with(otlp_exemplar(1.0)))
    conv = to_write_requests([(resent, ""), (resent, "")])  # the same exemplar twice is not a drop
    assert len(by_name(conv.requests["acme"], "requests_total")[0][1].exemplars) == 1
    assert not conv.dropped_exemplars


# --- spec edge cases: +Inf, stale markers, native histogram fields, bad parts ------------------

_CUMULATIVE = otlp.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_VALUE = otlp.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
STALE_BITS = 0x7FF0000000000002


def bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def classic(bucket_counts: list[int], flags: int = 0) -> dict[str, float]:
    m = otlp.Metric(name="h", histogram=otlp.Histogram(aggregation_temporality=_CUMULATIVE, data_points=[
        otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=5, sum=7.5, explicit_bounds=[1.0, 2.0],
                                bucket_counts=bucket_counts, flags=flags)]))
    req = to_write_requests([(one_metric_request(m), "")]).requests["acme"]
    return {lb["le"]: ts.samples[0].value for lb, ts in by_name(req, "h_bucket")}


def test_classic_inf_bucket_is_always_the_count() -> None:
    assert classic([1, 2, 2]) == {"1": 1.0, "2": 3.0, "+Inf": 5.0}
    # The buckets sum to 4, less than the count: +Inf still says 5.
    assert classic([1, 2, 1]) == {"1": 1.0, "2": 3.0, "+Inf": 5.0}
    # One entry fewer than the bounds need: a +Inf series all the same.
    assert classic([1, 2]) == {"1": 1.0, "2": 3.0, "+Inf": 5.0}
    assert classic([1]) == {"1": 1.0, "+Inf": 5.0}
    stale = classic([1, 2, 2], flags=_NO_VALUE)
    assert set(stale) == {"1", "2", "+Inf"} and {bits(v) for v in stale.values()} == {STALE_BITS}


def test_every_point_kind_without_a_recorded_value_is_a_stale_marker() -> None:
    flags = _NO_VALUE
    metrics = [
        otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[otlp.NumberDataPoint(
            time_unix_nano=TS_NS, as_int=3, flags=flags)])),
        otlp.Metric(name="c", sum=otlp.Sum(
            is_monotonic=True, aggregation_temporality=_CUMULATIVE,
            data_points=[otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=3.0, flags=flags,
                                              exemplars=[otlp_exemplar(3.0)])])),
        otlp.Metric(name="s", summary=otlp.Summary(data_points=[otlp.SummaryDataPoint(
            time_unix_nano=TS_NS, count=2, sum=3.0, flags=flags,
            quantile_values=[otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.0)])])),
        otlp.Metric(name="h", histogram=otlp.Histogram(aggregation_temporality=_CUMULATIVE, data_points=[
            otlp.HistogramDataPoint(time_unix_nano=TS_NS, count=2, sum=3.0, explicit_bounds=[1.0],
                                    bucket_counts=[1, 1], flags=flags)])),
    ]
    conv = to_write_requests([(one_metric_request(m), "") for m in metrics])
    req = conv.requests["acme"]
    floats = [ts for ts in req.timeseries if ts.samples and ts.labels[0].value != "target_info"]
    assert len(floats) == 1 + 1 + 3 + 4  # g, c_total, s{quantile} _sum _count, h le=1 +Inf _sum _count
    assert all(bits(ts.samples[0].value) == STALE_BITS for ts in floats)
    assert not conv.dropped and not any(ts.exemplars for ts in req.timeseries)  # no measurement


def test_exponential_histogram_without_a_recorded_value_is_a_stale_native_histogram() -> None:
    m = otlp.Metric(name="e", exponential_histogram=otlp.ExponentialHistogram(
        aggregation_temporality=_CUMULATIVE, data_points=[otlp.ExponentialHistogramDataPoint(
            time_unix_nano=1_700_000_000_000_000_000, scale=0, count=3, sum=4.0, zero_count=1,
            positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2]),
            flags=_NO_VALUE)]))
    conv = to_write_requests([(one_metric_request(m), "")])
    ((_, ts),) = by_name(conv.requests["acme"], "e")
    (h,) = ts.histograms
    assert h.timestamp == 1_700_000_000_000 and bits(h.sum) == STALE_BITS
    assert h.count_int == 0 and h.zero_count_int == 0 and not h.positive_spans and not h.positive_deltas
    assert h.schema == 0 and not conv.dropped


def test_native_histogram_fields_follow_the_spec() -> None:
    dp = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, scale=2, count=4, sum=9.0, zero_count=1,
        positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=-2, bucket_counts=[1, 0, 2]))
    h = native_histogram(dp, TS_MS)
    assert h is not None
    assert h.zero_threshold == 1e-128  # unset in OTLP: the spec's default
    assert h.reset_hint == types_pb2.Histogram.UNKNOWN
    assert h.zero_count_int == 1 and h.count_int == 4 and h.sum == 9.0 and h.schema == 2
    assert [(s.offset, s.length) for s in h.positive_spans] == [(-1, 3)]
    assert list(h.positive_deltas) == [1, -1, 2]
    dp.zero_threshold = 0.001
    h = native_histogram(dp, TS_MS)
    assert h is not None and h.zero_threshold == 0.001


def test_exponential_scales_out_of_range_never_raise() -> None:
    high = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, scale=100, count=3, sum=3.0,
        positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=2**30, bucket_counts=[1, 1, 1]))
    h = native_histogram(high, TS_MS)
    # 92 scales down: every bucket merges into one, at (2**30 >> 92) + 1 = 1.
    assert h is not None and h.schema == 8
    assert [(s.offset, s.length) for s in h.positive_spans] == [(1, 1)] and list(h.positive_deltas) == [3]
    low = high.__deepcopy__()
    low.scale = -100
    assert native_histogram(low, TS_MS) is None
    m = otlp.Metric(name="e", exponential_histogram=otlp.ExponentialHistogram(
        aggregation_temporality=_CUMULATIVE, data_points=[high, low]))
    conv = to_write_requests([(one_metric_request(m), "")])
    assert conv.dropped == {"unsupported_scale": 1}
    assert len(by_name(conv.requests["acme"], "e")[0][1].histograms) == 1


def test_a_metric_that_does_not_decode_costs_only_itself() -> None:
    req = ExportMetricsServiceRequest.FromString(one_metric_request(gauge("good_one", 1.0)))
    req.resource_metrics[0].scope_metrics[0].metrics.append(gauge("placeholder", 2.0))
    bad_metric = req.resource_metrics[0].scope_metrics[0].metrics[1]
    payload = one_metric_request(gauge("other", 3.0)) + with_invalid_utf8(
        req, lambda m: setattr(bad_metric, "name", m))
    conv = to_write_requests([(payload, "")])
    names = {lb["__name__"] for ts in conv.requests["acme"].timeseries
             for lb in [{x.name: x.value for x in ts.labels}]}
    assert {"good_one", "other"} <= names and not any(n.startswith("AD-UTF8") for n in names)
    ((pos, part),) = conv.bad
    assert pos == 0 and part.items == 1 and "malformed OTLP" in part.reason
    assert MARKER.encode()[1:] in part.value and b"good_one" not in part.value


def test_native_histogram_spans_skip_empty_runs_like_the_collector() -> None:
    dp = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, scale=0, count=6,
        positive=otlp.ExponentialHistogramDataPoint.Buckets(
            offset=0, bucket_counts=[0, 1, 0, 0, 0, 2, 0, 3, 0]),
        negative=otlp.ExponentialHistogramDataPoint.Buckets(offset=-3, bucket_counts=[0, 0, 0]))
    h = native_histogram(dp, TS_MS)
    assert h is not None
    # Leading and trailing empty buckets left out; three empty ones start a new span (offset =
    # the gap); one empty one is written as a zero.
    assert [(s.offset, s.length) for s in h.positive_spans] == [(2, 1), (3, 3)]
    assert list(h.positive_deltas) == [1, 1, -2, 3]
    assert not h.negative_spans and not h.negative_deltas


# --- issue 16: the corners where the spec and the Collector agree, and where we keep ours ----------

def exp_point(p: str, sum_: float | None = None, flags: int = 0) -> otlp.ExponentialHistogramDataPoint:
    dp = otlp.ExponentialHistogramDataPoint(
        time_unix_nano=TS_NS, scale=0, count=3, zero_count=1, flags=flags, attributes=kvs({"p": p}),
        positive=otlp.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2]))
    if sum_ is not None:
        dp.sum = sum_
    return dp


def test_exponential_histogram_point_without_a_sum_is_dropped_and_counted() -> None:
    m = otlp.Metric(name="e", exponential_histogram=otlp.ExponentialHistogram(
        aggregation_temporality=_CUMULATIVE, data_points=[
            exp_point("no_sum"), exp_point("sum", 4.0),
            exp_point("zero_sum", 0.0),  # set, to 0, is a sum
            exp_point("stale", flags=_NO_VALUE)]))  # a stale marker needs none
    conv = to_write_requests([(one_metric_request(m), "")])
    assert conv.dropped == {"missing_sum": 1}
    got = {labels["p"]: ts.histograms[0] for labels, ts in by_name(conv.requests["acme"], "e")}
    assert set(got) == {"sum", "zero_sum", "stale"}
    assert got["sum"].sum == 4.0 and got["zero_sum"].sum == 0.0 and bits(got["stale"].sum) == STALE_BITS
    assert conv.samples["acme"] == 3


def metadata_of(req: remote_pb2.WriteRequest) -> dict[str, tuple[int, str, str]]:
    return {m.metric_family_name: (m.type, m.unit, m.help) for m in req.metadata}


def test_metadata_unit_is_the_prometheus_unit_word() -> None:
    def number(name: str, unit: str, monotonic: bool | None) -> otlp.Metric:
        dp = otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=1.0)
        if monotonic is None:
            return otlp.Metric(name=name, unit=unit, description=f"{name} help",
                               gauge=otlp.Gauge(data_points=[dp]))
        return otlp.Metric(name=name, unit=unit, description=f"{name} help", sum=otlp.Sum(
            aggregation_temporality=_CUMULATIVE, is_monotonic=monotonic, data_points=[dp]))
    hist = otlp.Metric(name="http.server.request.duration", unit="s", histogram=otlp.Histogram(
        aggregation_temporality=_CUMULATIVE, data_points=[otlp.HistogramDataPoint(
            time_unix_nano=TS_NS, count=1, sum=0.1, explicit_bounds=[1.0], bucket_counts=[1, 0])]))
    metrics = [number("net.io", "By", True), number("net.rate", "By/s", None),
               number("cpu.utilization", "1", None), number("pool.usage", "1", False),
               number("requests", "{request}", True), number("speed", "m/s", False), hist]
    req = scopes_request([(otlp.ScopeMetrics(scope=InstrumentationScope(name="lib")), metrics)])
    got = metadata_of(to_write_requests([(req, "")]).requests["acme"])
    meta = types_pb2.MetricMetadata
    assert got == {
        "net_io_bytes_total": (meta.COUNTER, "bytes", "net.io help"),
        "net_rate_bytes_per_second": (meta.GAUGE, "bytes_per_second", "net.rate help"),
        "cpu_utilization_ratio": (meta.GAUGE, "", "cpu.utilization help"),
        "pool_usage": (meta.GAUGE, "", "pool.usage help"),  # a non-monotonic sum: no _ratio
        "requests_total": (meta.COUNTER, "", "requests help"),
        "speed_meters_per_second": (meta.GAUGE, "meters_per_second", "speed help"),
        "http_server_request_duration_seconds": (meta.HISTOGRAM, "seconds", ""),
    }


def test_label_names_of_points_scopes_and_resources_are_sanitised_alike() -> None:
    dp = otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=1.0, attributes=kvs(
        {"_private": "p", "ügyfél": "u", "2xx": "d", "a..b": "c", "__name__": "not-a-name"}))
    sm = otlp.ScopeMetrics(scope=InstrumentationScope(name="lib", attributes=kvs({"_team": "core"})))
    req = scopes_request([(sm, [otlp.Metric(name="g", gauge=otlp.Gauge(data_points=[dp]))])],
                         resource={"_region": "eu", "ország": "hu"})
    conv = to_write_requests([(req, "")]).requests["acme"]
    ((labels, _),) = by_name(conv, "g")
    assert labels["_private"] == "p" and labels["_gyf_l"] == "u" and labels["key_2xx"] == "d"
    assert labels["a_b"] == "c" and labels["_name_"] == "not-a-name" and labels["__name__"] == "g"
    assert labels["otel_scope_team"] == "core"  # "otel_scope_" + "_team": the run collapses
    ((info, _),) = by_name(conv, "target_info")
    assert info["_region"] == "eu" and info["orsz_g"] == "hu"


def test_colliding_keys_join_their_values_once_in_key_order() -> None:
    dp = otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=1.0, attributes=kvs(
        {"a_b": "3", "a.b": "1", "a-b": "2", "a..b": "0"}))
    req = to_write_requests([(one_metric_request(otlp.Metric(name="g", gauge=otlp.Gauge(
        data_points=[dp]))), "")]).requests["acme"]
    ((_, ts),) = by_name(req, "g")
    names = [lb.name for lb in ts.labels]
    assert names.count("a_b") == 1 and names == sorted(names)
    # Original keys in byte order: "a-b" < "a..b" < "a.b" < "a_b"; each value once.
    assert {lb.name: lb.value for lb in ts.labels}["a_b"] == "2;0;1;3"


def test_scope_schema_url_stays_a_label_of_every_series() -> None:
    sm = otlp.ScopeMetrics(scope=InstrumentationScope(name="lib", version="1"),
                           schema_url="https://opentelemetry.io/schemas/1.26.0")
    req = to_write_requests([(scopes_request([(sm, [gauge("g")])]), "")]).requests["acme"]
    ((labels, _),) = by_name(req, "g")
    assert labels["otel_scope_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"


def test_exemplar_label_names_are_sanitised() -> None:
    ex = otlp_exemplar(0.5, attrs={"user.id": "u-1", "_debug": "1", "ügy": "x", "a..b": "y"})
    pairs, left_off = exemplar_labels(ex)
    assert dict(pairs) == {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex(), "user_id": "u-1",
                           "_debug": "1", "_gy": "x", "a_b": "y"}
    assert left_off == 0


def test_long_and_non_ascii_label_values_round_trip_through_the_encoded_labels() -> None:
    long_value = "é" * 300  # 600 bytes: a two-byte length, longer than the label cache keeps
    dp = otlp.NumberDataPoint(time_unix_nano=TS_NS, as_double=1.0,
                              attributes=kvs({"long": long_value, "city": "Zürich"}))
    req = to_write_requests([(one_metric_request(otlp.Metric(name="g", gauge=otlp.Gauge(
        data_points=[dp]))), "")]).requests["acme"]
    decoded = remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(encode(req))))
    ((labels, _),) = by_name(decoded, "g")
    assert labels["long"] == long_value and labels["city"] == "Zürich"


def test_point_attributes_named_le_or_quantile_cannot_move_a_sample() -> None:
    hist = otlp.Metric(name="h", histogram=otlp.Histogram(
        aggregation_temporality=_CUMULATIVE, data_points=[otlp.HistogramDataPoint(
            time_unix_nano=TS_NS, count=3, sum=3.0, explicit_bounds=[1.0], bucket_counts=[1, 2],
            attributes=kvs({"le": "evil"}))]))
    summary = otlp.Metric(name="s", summary=otlp.Summary(data_points=[otlp.SummaryDataPoint(
        time_unix_nano=TS_NS, count=1, sum=1.0, attributes=kvs({"quantile": "evil"}),
        quantile_values=[otlp.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.0)])]))
    req = to_write_requests([(scopes_request([(otlp.ScopeMetrics(scope=InstrumentationScope(
        name="lib")), [hist, summary])]), "")]).requests["acme"]
    assert {lb["le"]: ts.samples[0].value for lb, ts in by_name(req, "h_bucket")} == {"1": 1.0, "+Inf": 3.0}
    assert by_name(req, "h_count")[0][0]["le"] == "evil"  # on a series without its own le, it stays
    assert [lb["quantile"] for lb, _ in by_name(req, "s")] == ["0.5"]
