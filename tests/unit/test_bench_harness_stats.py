"""Pure logic of the bench: percentiles, the open-loop schedule, /proc parsing, payload counting."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from bench.histogram import LatencyHistogram, bucket_of, bucket_value
from bench.loadgen import WorkerTotals
from bench.payloads import PayloadShape, build, build_ring, item_count
from bench.procstat import machine_cpu, parse_stat, parse_status_kib
from bench.schedule import intended_times, offset_for, per_process_rate
from bench.systems import count_json_items
from otlp.signals import Signal


def nearest_rank(sorted_values: list[float], p: float) -> float:
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


@pytest.mark.parametrize("p", [50, 90, 99, 99.9])
def test_percentiles_within_one_percent_of_exact(p: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4, 1.2) for _ in range(20_000)]  # seconds, ~18 ms median
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    exact = nearest_rank(sorted(values), p) * 1000
    assert h.percentile_ms(p) == pytest.approx(exact, rel=0.01)


def test_percentile_of_a_constant_is_that_constant() -> None:
    h = LatencyHistogram()
    for _ in range(100):
        h.record(0.0125)
    assert h.percentile_ms(50) == pytest.approx(12.5)  # clamped to min/max, not the bucket midpoint
    assert h.percentile_ms(99.9) == pytest.approx(12.5)


def test_empty_histogram_answers_zero() -> None:
    h = LatencyHistogram()
    assert h.percentile_ms(99) == 0.0
    assert h.summary_ms()["p99"] == 0.0


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(5000):
        v = rng.expovariate(50)
        (a if i % 2 else b).record(v)
        both.record(v)
    a.merge(b)
    assert a.buckets == both.buckets
    assert a.count == both.count
    for p in (50, 99, 99.9):
        assert a.percentile_ms(p) == both.percentile_ms(p)


def test_histogram_survives_its_plain_data_form() -> None:
    h = LatencyHistogram()
    for v in (0.001, 0.002, 0.5):
        h.record(v)
    back = LatencyHistogram.from_dict(h.to_dict())
    assert back.summary_ms() == h.summary_ms()


def test_buckets_are_about_one_percent_wide() -> None:
    for us in (10.0, 1234.0, 5e6):
        assert bucket_value(bucket_of(us)) == pytest.approx(us, rel=0.01)
    assert bucket_of(0.0) == 0


def test_open_loop_schedule_is_fixed_in_advance() -> None:
    times = list(intended_times(100.0, start=10.0, end=11.0))
    assert len(times) == 100
    assert times[0] == 10.0
    assert times[57] == pytest.approx(10.57)  # from the start, never from the previous send
    assert all(10.0 <= t < 11.0 for t in times)


def test_poisson_schedule_keeps_the_mean_rate() -> None:
    times = list(intended_times(200.0, start=0.0, end=50.0, poisson=True, seed=1))
    assert len(times) == pytest.approx(10_000, rel=0.05)
    assert times == sorted(times)


def test_schedule_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError):
        next(intended_times(0.0, 0.0, 1.0))


def test_processes_split_the_rate_and_interleave() -> None:
    r = per_process_rate(1000.0, 4)
    assert r == 250.0
    offsets = [offset_for(i, 4, r) for i in range(4)]
    assert offsets == pytest.approx([0.0, 0.001, 0.002, 0.003])


def test_parse_stat_copes_with_parentheses_in_the_name() -> None:
    line = "4242 (python (worker) 1) S 4200 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1"
    ppid, cpu = parse_stat(line)
    assert ppid == 4200
    assert cpu == pytest.approx(300 / 100)  # utime+stime in clock ticks (100 Hz on Linux)


def test_parse_status_reads_kib_fields() -> None:
    text = "Name:\tpython\nVmHWM:\t  81234 kB\nVmRSS:\t   70000 kB\n"
    assert parse_status_kib(text, "VmHWM") == 81234
    assert parse_status_kib(text, "VmRSS") == 70000
    assert parse_status_kib(text, "VmSwap") == 0


@pytest.mark.parametrize("signal", list(Signal))
def test_payloads_carry_the_items_they_claim(signal: Signal) -> None:
    shape = PayloadShape(items=150, attributes=5, resources=3)
    p = build(signal, shape, seed=4)
    assert p.items == 150
    assert item_count(signal, p.data) == 150
    # Concatenated requests are one valid request: the count adds up, as in a gateway batch.
    assert item_count(signal, p.data + p.data) == 300


def test_payload_ring_members_differ() -> None:
    ring = build_ring(Signal.TRACES, PayloadShape(items=16), count=3)
    assert len({p.data for p in ring}) == 3


def test_default_payload_is_an_sdk_sized_batch() -> None:
    p = build(Signal.TRACES, PayloadShape())
    assert p.items == 512
    assert 100_000 < len(p.data) < 1_000_000


def test_json_item_count_follows_the_otlp_json_mapping() -> None:
    doc: dict[str, Any] = {"resourceSpans": [{"scopeSpans": [{"spans": [{}, {}]}, {"spans": [{}]}]}]}
    assert count_json_items(Signal.TRACES, doc) == 3
    metrics: dict[str, Any] = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"gauge": {"dataPoints": [{}, {}]}}, {"histogram": {"dataPoints": [{}]}}]}]}]}
    assert count_json_items(Signal.METRICS, metrics) == 3
    logs: dict[str, Any] = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]}]}]}
    assert count_json_items(Signal.LOGS, logs) == 1


def test_worker_totals_add_and_round_trip() -> None:
    a, b = WorkerTotals(sent_items=10, acked_items=8), WorkerTotals(sent_items=5, acked_items=5)
    a.errors["grpc UNAVAILABLE"] += 1
    b.hist.record(0.01)
    a.add(b)
    back = WorkerTotals.from_dict(a.to_dict())
    assert (back.sent_items, back.acked_items, back.errors["grpc UNAVAILABLE"]) == (15, 13, 1)
    assert back.hist.count == 1


def test_machine_cpu_counts_idle_and_iowait_as_not_busy(tmp_path: Path) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice (clock ticks)
    (tmp_path / "stat").write_text("cpu  300 0 100 500 100 0 0 0 50 0\ncpu0 1 2 3 4\n")
    busy, total = machine_cpu(tmp_path)
    assert (busy, total) == pytest.approx((400 / 100, 1000 / 100))
