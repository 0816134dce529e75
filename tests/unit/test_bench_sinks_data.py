"""The shape of what ``bench sinks`` pre-fills (pure logic): one tenant spread over every
partition, with a trace's spans and a metric series' points each kept in one partition."""

from __future__ import annotations

from collections import defaultdict

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.payloads import item_count
from bench.sinks import plan
from bench.sinks_data import TENANT_PLACEHOLDER, build_messages, restamp, tenant_name
from otlp.signals import Signal


def test_every_partition_gets_messages_and_a_trace_stays_in_one() -> None:
    messages = build_messages(Signal.TRACES, 12, 40, 4)
    assert sorted({m.partition for m in messages}) == [0, 1, 2, 3]
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for m in messages:
        assert item_count(Signal.TRACES, m.value) == m.items == 40
        for rs in ExportTraceServiceRequest.FromString(m.value).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    partitions_of[span.trace_id].add(m.partition)
    assert len(partitions_of) > 12 and all(len(p) == 1 for p in partitions_of.values())


def test_a_series_stays_in_its_partition_with_rising_timestamps() -> None:
    messages = build_messages(Signal.METRICS, 9, 5, 3, now_ms=1_800_000_000_000)
    series: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for m in messages:
        for rm in ExportMetricsServiceRequest.FromString(m.value).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.gauge.data_points:
                        series[dp.attributes[0].value.string_value].append((m.partition, dp.time_unix_nano))
    assert len(series) == 3 * 5
    for points in series.values():
        assert len({p for p, _ in points}) == 1
        times = [t for _, t in points]
        assert times == sorted(times) and len(set(times)) == len(times) == 3
    assert max(t for points in series.values() for _, t in points) <= 1_800_000_000_000 * 1_000_000


def test_restamp_puts_a_fresh_tenant_in_place_of_the_placeholder() -> None:
    (message,) = build_messages(Signal.LOGS, 1, 3, 1)
    tenant = tenant_name(0xABCDEF12)
    (stamped,) = restamp([message], tenant)
    assert TENANT_PLACEHOLDER.encode() not in stamped.value and tenant.encode() in stamped.value
    assert item_count(Signal.LOGS, stamped.value) == 3
    with pytest.raises(ValueError, match="characters"):
        restamp([message], "short")


def test_the_plan_runs_every_worker_count_but_jaeger_once() -> None:
    names = [s.name for s in plan(["es-spans", "jaeger-es", "prometheus"], [1, 2])]
    assert names == ["es-spans-w1", "es-spans-w2", "jaeger-es-w1", "prometheus-w1", "prometheus-w2"]
    with pytest.raises(ValueError, match="unknown sink target"):
        plan(["kafka"], [1])
