"""OTLP metrics to Prometheus remote-write 1.0 ``WriteRequest``s, one per tenant.

Follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec (names, label names
and unit words in ``prom_names``):

- gauges -> gauges; monotonic cumulative sums -> counters (``_total``); non-monotonic sums -> gauges
  (without the ``_ratio`` an OTLP gauge in unit ``1`` gets); metadata per family: TYPE, HELP and
  UNIT as the Prometheus unit word (``seconds``, not ``s``);
- histograms -> ``_bucket{le}`` (cumulative, and ``+Inf`` always equal to the point's count),
  ``_sum``, ``_count``;
- exponential histograms -> native histograms (schema = scale, capped at 8 by merging buckets;
  scales below -4 are dropped), integer counts with delta-encoded buckets and a zero bucket
  (see ``native_histogram``); a point without a sum is dropped and counted (``missing_sum``), as
  the spec says, rather than written with sum 0;
- summaries -> ``{quantile}``, ``_sum``, ``_count``;
- ``job`` = ``service.namespace/service.name``, ``instance`` = ``service.instance.id``, and a
  ``target_info`` series carrying the other resource attributes;
- the instrumentation scope on every series: ``otel_scope_name``, ``otel_scope_version``,
  ``otel_scope_schema_url`` (the ``ScopeMetrics`` schema URL) and each scope attribute as
  ``otel_scope_<key>``. The spec makes scope attributes identifying, so two scopes that differ only
  in an attribute stay two series; an attribute that would land on one of the three names above is
  dropped, as the spec says. ``target_info`` describes the resource, not a scope, so it carries
  none of them and stays one series per ``job``/``instance``. A data point attribute that
  sanitises to one of these names loses to the scope's label (where the spec would join the
  values with ``;``): a point cannot pose as another scope, as it cannot as another tenant;
- exemplars of monotonic sums and histograms become remote-write exemplars (``trace_id``,
  ``span_id`` in hex, then the filtered attributes while the label set stays within the
  OpenMetrics limit of 128 characters; the rest are left off and counted). A classic histogram's
  exemplar goes on the ``_bucket`` series whose ``le`` it falls under. Exemplars of gauges and
  non-monotonic sums are dropped and counted, as the spec says.

Delta temporality is dropped and counted (reason ``delta_temporality``): turning deltas into
cumulative series needs state across records and replicas, which a stateless consumer group
member does not have. Data points of every kind flagged "no recorded value" become Prometheus
stale markers (the NaN with bits ``0x7ff0000000000002``; for a native histogram, its sum).

Every series carries a ``tenant`` label set from the gateway-stamped ``tenant.id`` (a client
attribute named ``tenant`` never overrides it). ``tenant.id`` and ``correlation.id`` are not
copied into ``target_info``: the correlation id changes per request and would mint a new
series for every request.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cramjam
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as otlp

from otlp.signals import ATTR_CORRELATION, ATTR_TENANT
from pipelines.convert.otlp_values import as_label_value, resource_tenant
from pipelines.convert.parts import BadPart, isolate
from pipelines.convert.prom_names import Kind, format_bound, label_name, metric_name, unit_word
from protos import remote_pb2, types_pb2

Labels = tuple[tuple[str, str], ...]
# An exemplar until it is written: (time in ns, value, labels).
_Held = tuple[int, float, list[tuple[str, str]]]

# Prometheus' staleness marker: a specific NaN bit pattern, not any NaN.
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
MAX_SCHEMA = 8
MIN_SCHEMA = -4
# The spec's zero threshold for an exponential histogram point that does not set one.
DEFAULT_ZERO_THRESHOLD = 1e-128
TENANT_LABEL = "tenant"
# OpenMetrics: an exemplar's label names and values together, in code points.
EXEMPLAR_LABELS_MAX = 128
SCOPE_PREFIX = "otel_scope_"

_CUMULATIVE = otlp.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_RECORDED_VALUE = otlp.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_RESOURCE_IDENTITY = frozenset({"service.name", "service.namespace", "service.instance.id",
                                ATTR_TENANT, ATTR_CORRELATION})
_SCOPE_IDENTITY = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})
_EXEMPLAR_IDS = frozenset({"trace_id", "span_id"})
_META_TYPE = {
    Kind.COUNTER: types_pb2.MetricMetadata.COUNTER,
    Kind.GAUGE: types_pb2.MetricMetadata.GAUGE,
    Kind.UPDOWN: types_pb2.MetricMetadata.GAUGE,
    Kind.HISTOGRAM: types_pb2.MetricMetadata.HISTOGRAM,
    Kind.SUMMARY: types_pb2.MetricMetadata.SUMMARY,
}


# A series until it is written: (id of its point's label set, metric name, the labels the name
# adds: ``le`` or ``quantile``). Cheap to hash, where the sorted label tuple of every sample was
# not: a histogram point makes a dozen series from one label set.
_Extra = tuple[tuple[str, str], ...]
_SeriesKey = tuple[int, str, _Extra]
_NO_EXTRA: _Extra = ()
# Label encodings (a ``Label`` message as a field of ``TimeSeries``) by (name, value): the same
# label sets come back in every export, so later batches find theirs here. Cleared when full;
# long values are encoded each time, so the cache stays within a few MiB whatever clients send.
_LABEL_BYTES: dict[tuple[str, str], bytes] = {}
_LABEL_BYTES_MAX = 1 << 14
_LABEL_CACHED_CHARS = 200


@dataclass
class _TenantSeries:
    # Each distinct label set of a point (attributes, scope and resource labels, tenant), sorted.
    point_ids: dict[Labels, int] = field(default_factory=dict)
    point_labels: list[Labels] = field(default_factory=list)
    # The same by (id of the scope's labels, attribute labels in the order sent): SDKs send a
    # series' attributes in the same order every time, so a repeat skips the merge and sort.
    seen: dict[tuple[object, ...], int] = field(default_factory=dict)
    floats: dict[_SeriesKey, dict[int, float]] = field(default_factory=dict)
    histograms: dict[_SeriesKey, dict[int, types_pb2.Histogram]] = field(default_factory=dict)
    metadata: dict[str, types_pb2.MetricMetadata] = field(default_factory=dict)
    # Per series and millisecond. Prometheus' exemplar storage keeps one exemplar per series and
    # timestamp (a second one is "out of order"), so the later one wins here.
    exemplars: dict[_SeriesKey, dict[int, _Held]] = field(default_factory=dict)
    added: int = 0
    dropped_exemplars: Counter[str] = field(default_factory=Counter)
    dropped_exemplar_labels: int = 0

    def point(self, labels: dict[str, str]) -> int:
        """The id of a label set (without ``__name__``), shared by the series it makes."""
        key = tuple(sorted(labels.items()))
        pid = self.point_ids.get(key)
        if pid is None:
            pid = self.point_ids[key] = len(self.point_labels)
            self.point_labels.append(key)
        return pid

    def scoped_point(self, attrs: dict[str, str], base: dict[str, str], bid: int) -> int:
        """``point({**attrs, **base})``, where ``bid`` is ``point(base)``: the base wins."""
        seen = (bid, *attrs.items())
        pid = self.seen.get(seen)
        if pid is None:
            pid = self.seen[seen] = self.point({**attrs, **base})
        return pid

    def add(self, key: _SeriesKey, ts_ms: int, value: float) -> None:
        points = self.floats.get(key)
        if points is None:
            points = self.floats[key] = {}
        points[ts_ms] = value
        self.added += 1

    def add_histogram(self, key: _SeriesKey, h: types_pb2.Histogram) -> None:
        self.histograms.setdefault(key, {})[h.timestamp] = h
        self.added += 1

    def add_exemplars(self, key: _SeriesKey, exemplars: Iterable[otlp.Exemplar]) -> None:
        """Exemplars of the series ``key`` (which must also get a sample or histogram)."""
        slot = self.exemplars.setdefault(key, {})
        for ex in exemplars:
            ns = ex.time_unix_nano
            ms = ns // 1_000_000
            held = slot.get(ms)
            if held is not None and held[0] != ns:  # the same one twice (a resent point) is no drop
                self.dropped_exemplars["same_millisecond"] += 1
                if held[0] > ns:
                    continue
            pairs, left_off = exemplar_labels(ex)
            self.dropped_exemplar_labels += left_off
            slot[ms] = (ns, _exemplar_value(ex), pairs)

    def labels_of(self, key: _SeriesKey) -> bytes:
        """The series' labels, sorted by name, as encoded ``TimeSeries.labels`` fields.

        ``__name__`` and the extra labels win over a point label of the same name (an attribute
        named ``le`` cannot move a sample to another bucket).
        """
        pid, name, extra = key
        labels = self.point_labels[pid]
        if extra:
            taken = {n for n, _ in extra}
            pairs = sorted([*(lb for lb in labels if lb[0] not in taken), ("__name__", name), *extra])
        else:
            pairs = sorted([*labels, ("__name__", name)])
        cache = _LABEL_BYTES
        if len(cache) > _LABEL_BYTES_MAX:
            cache.clear()
        out = []
        for pair in pairs:
            enc = cache.get(pair)
            if enc is None:
                enc = _encode_label(pair)
                if len(pair[1]) <= _LABEL_CACHED_CHARS:
                    cache[pair] = enc
            out.append(enc)
        return b"".join(out)

    def request(self) -> remote_pb2.WriteRequest:
        """One request: float series, then histogram series, then the exemplar-only entries.

        Labels are merged in from their cached encodings (``MergeFromString`` appends repeated
        fields), samples added in place: both cheaper than building ``Label``/``Sample`` messages
        and extending, which copies each of them.
        """
        req = remote_pb2.WriteRequest()
        add_series = req.timeseries.add
        exemplars = self.exemplars
        labels_of = self.labels_of
        for key, points in self.floats.items():
            ts = add_series()
            ts.MergeFromString(labels_of(key))
            add_sample = ts.samples.add
            if len(points) == 1:
                for t, v in points.items():
                    add_sample(value=v, timestamp=t)
            else:
                for t in sorted(points):
                    add_sample(value=points[t], timestamp=t)
            if exemplars and key in exemplars:
                _write_exemplars(ts, exemplars[key])
        for key, hpoints in self.histograms.items():
            ts = add_series()
            ts.MergeFromString(labels_of(key))
            ts.histograms.extend(hpoints[t] for t in sorted(hpoints))
        # A remote-write 1.0 receiver (Prometheus' write handler) appends a series' exemplars
        # before its histograms, and an exemplar of a series the head does not have yet is
        # dropped: a new native histogram would lose its first exemplars. So they ride in a
        # second entry with the same labels, after the one that creates the series.
        for key, held in exemplars.items():
            if key in self.histograms:
                ts = add_series()
                ts.MergeFromString(labels_of(key))
                _write_exemplars(ts, held)
        req.metadata.extend(self.metadata.values())
        return req


def _encode_label(pair: tuple[str, str]) -> bytes:
    """``TimeSeries.labels`` (field 1) holding ``Label{name = 1, value = 2}``, protobuf wire format."""
    name, value = pair[0].encode(), pair[1].encode()
    body = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(len(value)) + value
    return b"\x0a" + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _write_exemplars(ts: types_pb2.TimeSeries, held: dict[int, _Held]) -> None:
    """Oldest first: the receiver refuses an exemplar older than the newest it holds for the series.

    Built in place with ``add``: constructing messages and then extending copies each of them.
    """
    for ms in sorted(held):
        _, value, labels = held[ms]
        add_label = ts.exemplars.add(value=value, timestamp=ms).labels.add
        for name, text in labels:
            add_label(name=name, value=text)


@dataclass
class Conversion:
    """Requests per tenant, how many samples they carry, and what was dropped and why."""

    requests: dict[str, remote_pb2.WriteRequest]
    samples: dict[str, int]
    dropped: Counter[str]
    # (position in the input, part) of each part that does not decode (a whole payload that is
    # not a protobuf, a ResourceMetrics whose resource does not, else a single metric with its
    # resource and scope); everything else of that payload still converts.
    bad: list[tuple[int, BadPart]] = field(default_factory=list)
    # Whole exemplars not written, by reason; exemplar attributes left off for the label limit.
    dropped_exemplars: Counter[str] = field(default_factory=Counter)
    dropped_exemplar_labels: int = 0


def _attr_labels(kvs: Sequence[KeyValue], name_of: Callable[[str], str] = label_name) -> dict[str, str]:
    """Attributes as labels; keys that sanitise to the same name join values with ``;``.

    ``name_of`` makes the label name of a key: scope attributes get their prefix before the key
    is sanitised, as the spec has it. A function rather than a prefix argument, so the per-point
    calls do not pay a string concatenation per attribute.
    """
    out: dict[str, str] = {}
    collided = empty = False
    for kv in kvs:
        name = name_of(kv.key)
        if name in out:
            collided = True
            break
        v = kv.value
        # Strings are most attributes: no call for them (this loop runs for every point).
        text = v.string_value if v.WhichOneof("value") == "string_value" else as_label_value(v)
        out[name] = text
        if not text:
            empty = True
    if collided:
        grouped: dict[str, list[str]] = {}
        for kv in sorted(kvs, key=lambda k: k.key):
            grouped.setdefault(name_of(kv.key), []).append(as_label_value(kv.value))
        out = {n: ";".join(v) for n, v in grouped.items()}
        empty = True
    # To Prometheus an empty label is no label; copying only when there is one to leave out.
    return {n: v for n, v in out.items() if v} if empty else out


def _resource_labels(kvs: Sequence[KeyValue], tenant: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels on every series of the resource, extra labels of its ``target_info``)."""
    attrs = {kv.key: as_label_value(kv.value) for kv in kvs}
    labels: dict[str, str] = {}
    service = attrs.get("service.name", "")
    namespace = attrs.get("service.namespace", "")
    job = f"{namespace}/{service}" if namespace else service
    if job:
        labels["job"] = job
    if attrs.get("service.instance.id"):
        labels["instance"] = attrs["service.instance.id"]
    labels[TENANT_LABEL] = tenant
    info = _attr_labels([kv for kv in kvs if kv.key not in _RESOURCE_IDENTITY])
    return labels, info


def _scope_label_name(key: str) -> str:
    return label_name(SCOPE_PREFIX + key)


def _scope_labels(sm: otlp.ScopeMetrics) -> dict[str, str]:
    """The labels a scope puts on each of its series; computed once per scope, not per point.

    Empty values are left out: to Prometheus an empty label is no label, so a scope without a
    version or schema URL makes the same series either way.
    """
    scope = sm.scope
    out = {n: v for n, v in _attr_labels(scope.attributes, _scope_label_name).items()
           if n not in _SCOPE_IDENTITY} if scope.attributes else {}
    if scope.name:
        out["otel_scope_name"] = scope.name
    if scope.version:
        out["otel_scope_version"] = scope.version
    if sm.schema_url:
        out["otel_scope_schema_url"] = sm.schema_url
    return out


def exemplar_labels(ex: otlp.Exemplar) -> tuple[list[tuple[str, str]], int]:
    """(An exemplar's labels, how many filtered attributes did not fit the label limit).

    ``trace_id``/``span_id`` come first and win over attributes of the same name; attributes
    follow in name order, each kept only if the whole label set stays within 128 characters, so
    which ones survive does not depend on the order the SDK sent them in.
    """
    labels = []
    used = 0
    trace_id, span_id, attributes = ex.trace_id, ex.span_id, ex.filtered_attributes
    if trace_id:
        text = trace_id.hex()
        labels.append(("trace_id", text))
        used = 8 + len(text)
    if span_id:
        text = span_id.hex()
        labels.append(("span_id", text))
        used += 7 + len(text)
    left_off = 0
    if attributes:
        for name, text in sorted(_attr_labels(attributes).items()):
            if name in _EXEMPLAR_IDS:
                continue
            if used + len(name) + len(text) > EXEMPLAR_LABELS_MAX:
                left_off += 1
                continue
            labels.append((name, text))
            used += len(name) + len(text)
    return labels, left_off


def _exemplar_value(ex: otlp.Exemplar) -> float:
    return float(ex.as_int) if ex.WhichOneof("value") == "as_int" else ex.as_double


def _number(dp: otlp.NumberDataPoint) -> float:
    if dp.flags & _NO_RECORDED_VALUE:
        return STALE_NAN
    return float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double


def _downscale(offset: int, counts: Sequence[int], by: int) -> tuple[int, list[int]]:
    """Merge buckets to a coarser scale: index i at scale s is index i >> by at scale s - by."""
    if by <= 0 or not counts:
        return offset, list(counts)
    first = offset >> by
    merged = [0] * (((offset + len(counts) - 1) >> by) - first + 1)
    for i, c in enumerate(counts):
        merged[((offset + i) >> by) - first] += c
    return first, merged


def _spans_deltas(offset: int, counts: Sequence[int]) -> tuple[list[types_pb2.BucketSpan], list[int]]:
    """The sparse layout of dense OTLP buckets: spans over the non-empty ones, counts delta-encoded.

    OTLP bucket ``i`` covers ``(base**i, base**(i+1)]``; Prometheus bucket ``j`` covers
    ``(base**(j-1), base**j]``, so the Prometheus index is the OTLP one plus one. As in the
    Collector's translator (after client_golang): empty buckets at either end are left out, a
    run of more than two empty buckets starts a new span (its offset is the gap), shorter runs
    are written as zeros.
    """
    # [offset, length] pairs until the end: growing a BucketSpan message in place costs a
    # protobuf attribute access per bucket.
    spans: list[list[int]] = []
    deltas: list[int] = []
    prev = 0
    end = 0  # Prometheus index after the last bucket written
    for i, count in enumerate(counts):
        if not count:
            continue
        index = offset + 1 + i
        if not spans:
            spans.append([index, 0])
        elif index - end > 2:
            spans.append([index - end, 0])
        else:
            for _ in range(index - end):
                deltas.append(-prev)
                prev = 0
            spans[-1][1] += index - end
        spans[-1][1] += 1
        deltas.append(count - prev)
        prev = count
        end = index + 1
    return [types_pb2.BucketSpan(offset=o, length=n) for o, n in spans], deltas


def native_histogram(dp: otlp.ExponentialHistogramDataPoint, ts_ms: int) -> types_pb2.Histogram | None:
    """The native histogram of an exponential histogram point; None if its scale is below -4.

    Per the spec's "Exponential Histograms" section (and the Collector's prometheusremotewrite
    translator): schema = scale, downscaled to 8 by merging buckets when above (any scale, say
    100, only merges more); a scale below -4 cannot be rescaled and the point is dropped;
    ``zero_threshold`` is the point's, or ``1e-128`` when unset (0); ``zero_count`` as is;
    buckets as spans per side (``_spans_deltas``), counts delta-encoded; reset hint UNKNOWN,
    the one that is always safe (Prometheus detects resets itself). A point flagged "no
    recorded value" becomes a stale marker: sum is the stale NaN bit pattern, count 0 and no
    buckets, as Prometheus' own native-histogram stale marker (the spec and the Collector put
    the stale NaN's bits in the integer count; Prometheus looks at the sum only).
    """
    if dp.scale < MIN_SCHEMA:
        return None
    by = max(dp.scale - MAX_SCHEMA, 0)
    schema = dp.scale - by
    threshold = dp.zero_threshold or DEFAULT_ZERO_THRESHOLD
    if dp.flags & _NO_RECORDED_VALUE:
        return types_pb2.Histogram(count_int=0, sum=STALE_NAN, schema=schema, zero_threshold=threshold,
                                   zero_count_int=0, reset_hint=types_pb2.Histogram.UNKNOWN,
                                   timestamp=ts_ms)
    pos_off, pos = _downscale(dp.positive.offset, dp.positive.bucket_counts, by)
    neg_off, neg = _downscale(dp.negative.offset, dp.negative.bucket_counts, by)
    pos_spans, pos_deltas = _spans_deltas(pos_off, pos)
    neg_spans, neg_deltas = _spans_deltas(neg_off, neg)
    return types_pb2.Histogram(
        count_int=dp.count,
        sum=dp.sum,
        schema=schema,
        zero_threshold=threshold,
        zero_count_int=dp.zero_count,
        reset_hint=types_pb2.Histogram.UNKNOWN,
        positive_spans=pos_spans,
        positive_deltas=pos_deltas,
        negative_spans=neg_spans,
        negative_deltas=neg_deltas,
        timestamp=ts_ms,
    )


def _metadata(out: _TenantSeries, name: str, kind: Kind, metric: otlp.Metric) -> None:
    """TYPE, HELP and UNIT of a family, the first seen winning. UNIT is the Prometheus unit word
    (``seconds``, ``bytes_per_second``; empty for ``1`` and ``{annotations}``), not the UCUM unit,
    as the spec's "Metric Metadata" says and the name's unit suffix has it."""
    if name not in out.metadata:
        out.metadata[name] = types_pb2.MetricMetadata(
            type=_META_TYPE[kind], metric_family_name=name, help=metric.description,
            unit=unit_word(metric.unit))


_LE_INF: _Extra = (("le", "+Inf"),)


@lru_cache(maxsize=4096)
def _le(bound: float) -> _Extra:
    """The ``le`` label of a bucket bound; bounds repeat in every point, so printed once."""
    return (("le", format_bound(bound)),)


def _kind(data: str, metric: otlp.Metric) -> Kind:
    if data == "sum":
        return Kind.COUNTER if metric.sum.is_monotonic else Kind.UPDOWN
    if data == "summary":
        return Kind.SUMMARY
    return Kind.GAUGE if data == "gauge" else Kind.HISTOGRAM


def _bucket_exemplars(hp: otlp.HistogramDataPoint, pid: int, bucket: str, out: _TenantSeries) -> None:
    """Each exemplar on the ``_bucket`` series of the bucket its value falls in.

    OTLP buckets include their upper bound, as ``le`` does, hence ``bisect_left``. Only the
    explicit bounds the point counts have a series (besides ``+Inf``): an exemplar above them
    goes on ``+Inf``.
    """
    bounds = hp.explicit_bounds[:len(hp.bucket_counts)]
    by_bucket: dict[int, list[otlp.Exemplar]] = {}
    for ex in hp.exemplars:
        by_bucket.setdefault(bisect_left(bounds, _exemplar_value(ex)), []).append(ex)
    for i, exemplars in by_bucket.items():
        le = format_bound(bounds[i]) if i < len(bounds) else "+Inf"
        out.add_exemplars((pid, bucket, (("le", le),)), exemplars)


def _convert_metric(metric: otlp.Metric, base: dict[str, str], bid: int, out: _TenantSeries,
                    dropped: Counter[str]) -> int:
    """Add one metric's series; returns the newest timestamp (ms) among its points."""
    data = metric.WhichOneof("data")
    if data is None:
        dropped["empty_metric"] += 1
        return 0
    body = getattr(metric, data)
    if data not in ("gauge", "summary") and body.aggregation_temporality != _CUMULATIVE:
        dropped["delta_temporality"] += len(body.data_points)
        return 0
    kind = _kind(data, metric)
    name = metric_name(metric.name, metric.unit, kind)
    _metadata(out, name, kind, metric)
    newest = 0
    point = out.scoped_point
    add = out.add
    if data in ("gauge", "sum"):
        counter = kind is Kind.COUNTER
        for dp in body.data_points:
            ts = dp.time_unix_nano // 1_000_000
            key = (point(_attr_labels(dp.attributes), base, bid), name, _NO_EXTRA)
            add(key, ts, _number(dp))
            if ts > newest:
                newest = ts
            if dp.exemplars and not dp.flags & _NO_RECORDED_VALUE:  # a stale marker has no measurement
                if counter:
                    out.add_exemplars(key, dp.exemplars)
                else:
                    out.dropped_exemplars["gauge"] += len(dp.exemplars)
    elif data == "histogram":
        bucket, count_name, sum_name = name + "_bucket", name + "_count", name + "_sum"
        floats = out.floats
        for hp in body.data_points:
            ts = hp.time_unix_nano // 1_000_000
            if ts > newest:
                newest = ts
            stale = bool(hp.flags & _NO_RECORDED_VALUE)
            pid = point(_attr_labels(hp.attributes), base, bid)
            # One series per explicit bound the point counts, then +Inf, which is the point's
            # count whatever the bucket counts say: the spec's last bucket "MUST have an +Inf
            # threshold", and bucket_counts may lack its last entry (or sum below count).
            # The bucket samples are most of a histogram's: written without a call each.
            cumulative = 0
            n = 0
            for bound, count in zip(hp.explicit_bounds, hp.bucket_counts, strict=False):
                cumulative += count
                key = (pid, bucket, _le(bound))
                samples = floats.get(key)
                if samples is None:
                    samples = floats[key] = {}
                samples[ts] = STALE_NAN if stale else float(cumulative)
                n += 1
            out.added += n
            add((pid, bucket, _LE_INF), ts, STALE_NAN if stale else float(hp.count))
            if hp.exemplars and not stale:
                _bucket_exemplars(hp, pid, bucket, out)
            add((pid, count_name, _NO_EXTRA), ts, STALE_NAN if stale else float(hp.count))
            if hp.HasField("sum"):
                add((pid, sum_name, _NO_EXTRA), ts, STALE_NAN if stale else hp.sum)
    elif data == "exponential_histogram":
        for ep in body.data_points:
            ts = ep.time_unix_nano // 1_000_000
            if not ep.HasField("sum") and not ep.flags & _NO_RECORDED_VALUE:
                # The spec: a point without a sum MUST be dropped (a sum of 0 would be a lie that
                # histogram_sum and rate(...) then average over); a stale marker needs none.
                dropped["missing_sum"] += 1
                continue
            h = native_histogram(ep, ts)
            if h is None:
                dropped["unsupported_scale"] += 1
                continue
            key = (point(_attr_labels(ep.attributes), base, bid), name, _NO_EXTRA)
            out.add_histogram(key, h)
            if ts > newest:
                newest = ts
            if ep.exemplars and not ep.flags & _NO_RECORDED_VALUE:
                out.add_exemplars(key, ep.exemplars)
    else:  # summary
        count_name, sum_name = name + "_count", name + "_sum"
        for sp in body.data_points:
            ts = sp.time_unix_nano // 1_000_000
            if ts > newest:
                newest = ts
            stale = bool(sp.flags & _NO_RECORDED_VALUE)
            pid = point(_attr_labels(sp.attributes), base, bid)
            for q in sp.quantile_values:
                add((pid, name, (("quantile", format_bound(q.quantile)),)), ts,
                    STALE_NAN if stale else q.value)
            add((pid, sum_name, _NO_EXTRA), ts, STALE_NAN if stale else sp.sum)
            add((pid, count_name, _NO_EXTRA), ts, STALE_NAN if stale else float(sp.count))
    return newest


def to_write_requests(payloads: Iterable[tuple[bytes, str]]) -> Conversion:
    """Convert (serialized ExportMetricsServiceRequest, record tenant) pairs, grouped per tenant.

    A payload that does not decode whole is converted part by part (``pipelines.convert.parts``):
    its good metrics convert, its bad parts are listed in ``Conversion.bad``.
    """
    by_tenant: dict[str, _TenantSeries] = {}
    dropped: Counter[str] = Counter()
    bad: list[tuple[int, BadPart]] = []
    for pos, (payload, record_tenant) in enumerate(payloads):
        parts = isolate(payload, ExportMetricsServiceRequest.FromString)
        bad.extend((pos, part) for part in parts.bad)
        for _, req in parts.good:
            _convert_request(req, record_tenant, by_tenant, dropped)
    dropped_exemplars: Counter[str] = Counter()
    for s in by_tenant.values():
        dropped_exemplars.update(s.dropped_exemplars)
    return Conversion({t: s.request() for t, s in by_tenant.items()},
                      {t: s.added for t, s in by_tenant.items()}, dropped, bad,
                      dropped_exemplars, sum(s.dropped_exemplar_labels for s in by_tenant.values()))


def _convert_request(req: ExportMetricsServiceRequest, record_tenant: str,
                     by_tenant: dict[str, _TenantSeries], dropped: Counter[str]) -> None:
    for rm in req.resource_metrics:
        tenant = resource_tenant(rm.resource.attributes, record_tenant)
        out = by_tenant.setdefault(tenant, _TenantSeries())
        res_labels, info = _resource_labels(rm.resource.attributes, tenant)
        newest = 0
        for sm in rm.scope_metrics:
            base = {**_scope_labels(sm), **res_labels}
            bid = out.point(base)
            for metric in sm.metrics:
                newest = max(newest, _convert_metric(metric, base, bid, out, dropped))
        if info and newest:
            out.add((out.point({**info, **res_labels}), "target_info", _NO_EXTRA), newest, 1.0)
            out.metadata.setdefault("target_info", types_pb2.MetricMetadata(
                type=types_pb2.MetricMetadata.GAUGE, metric_family_name="target_info",
                help="Target metadata"))


def split(req: remote_pb2.WriteRequest, max_series: int) -> list[remote_pb2.WriteRequest]:
    """Requests of at most ``max_series`` series each; metadata rides with the first."""
    if len(req.timeseries) <= max_series:
        return [req]
    parts = []
    for start in range(0, len(req.timeseries), max_series):
        part = remote_pb2.WriteRequest()
        part.timeseries.extend(req.timeseries[start:start + max_series])
        if start == 0:
            part.metadata.extend(req.metadata)
        parts.append(part)
    return parts


def encode(req: remote_pb2.WriteRequest) -> bytes:
    """The HTTP body remote-write expects: the protobuf, snappy block-compressed (not framed)."""
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
