"""Shared readiness of N workers: files in a directory, a clock injected (pure logic)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.metrics import MULTIPROC_ENV
from gateway.readiness import STALE_AFTER_PERIODS, SharedReadiness, expose


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Worker:
    """A worker's own state, settable by the test."""

    def __init__(self) -> None:
        self.state = (True, "bus ready")

    def __call__(self) -> tuple[bool, str]:
        return self.state


Pair = tuple[tuple[Worker, Worker], tuple[SharedReadiness, SharedReadiness]]


def _pair(tmp_path: Path, clock: Clock) -> Pair:
    own = (Worker(), Worker())
    shared = tuple(SharedReadiness(tmp_path, i, 2, own[i], period_s=1.0, clock=clock) for i in range(2))
    return own, (shared[0], shared[1])


def test_ready_only_when_every_worker_reported_ready(tmp_path: Path) -> None:
    clock = Clock()
    _own, (w0, w1) = _pair(tmp_path, clock)
    w0.publish()
    ready, reason = w0()
    assert not ready and reason == "worker 1: not started"
    w1.publish()
    assert w0()[0] and w1()[0]
    assert w1()[1] == "2 workers ready (bus ready)"


def test_a_worker_that_is_not_ready_makes_every_answer_not_ready(tmp_path: Path) -> None:
    clock = Clock()
    own, (w0, w1) = _pair(tmp_path, clock)
    own[1].state = (False, "kafka: broker unreachable")
    w0.publish()
    w1.publish()
    assert w0() == (False, "worker 1: kafka: broker unreachable")
    assert w1() == (False, "worker 1: kafka: broker unreachable")
    own[1].state = (True, "bus ready")
    w1.publish()
    assert w0()[0]


def test_a_worker_that_stops_reporting_counts_as_not_ready(tmp_path: Path) -> None:
    clock = Clock()
    _own, (w0, w1) = _pair(tmp_path, clock)
    w0.publish()
    w1.publish()
    clock.now += STALE_AFTER_PERIODS * 1.0 + 0.5
    w0.publish()  # worker 0 goes on reporting; worker 1 is wedged
    ready, reason = w0()
    assert not ready and reason.startswith("worker 1: no report for")


def test_own_state_is_read_live_not_from_the_last_report(tmp_path: Path) -> None:
    clock = Clock()
    own, (w0, w1) = _pair(tmp_path, clock)
    w0.publish()
    w1.publish()
    own[0].state = (False, "receivers not listening")
    assert w0() == (False, "worker 0: receivers not listening")


def test_a_stopped_worker_leaves_no_report_behind(tmp_path: Path) -> None:
    clock = Clock()
    _own, (w0, w1) = _pair(tmp_path, clock)
    w0.publish()
    w1.publish()
    w1.close()
    assert w0() == (False, "worker 1: not started")


def _gauge(worker: int) -> float | None:
    return REGISTRY.get_sample_value("gateway_ready", {"worker": str(worker)})


def test_each_report_sets_the_workers_ready_gauge(tmp_path: Path) -> None:
    clock = Clock()
    (own0, _own1), (w0, w1) = _pair(tmp_path, clock)
    w0.publish()
    w1.publish()
    assert (_gauge(0), _gauge(1)) == (1.0, 1.0)
    own0.state = (False, "bus unavailable")
    w0.publish()
    assert (_gauge(0), _gauge(1)) == (0.0, 1.0)


def test_one_process_gauge_reads_its_state_at_each_scrape() -> None:
    own = Worker()
    expose(own, index=7)
    assert _gauge(7) == 1.0
    own.state = (False, "receivers not listening")
    assert _gauge(7) == 0.0


def test_reports_in_multiprocess_mode_warn_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers N``: prometheus_client warns on every label removal in multiprocess mode."""
    clock = Clock()
    (own0, _own1), (w0, _w1) = _pair(tmp_path, clock)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w0.publish()
        own0.state = (False, "bus unavailable")
        w0.publish()
    assert _gauge(0) == 0.0


def test_a_report_replaces_a_function_exposed_for_the_same_worker(tmp_path: Path) -> None:
    own = Worker()
    expose(own, index=1)
    clock = Clock()
    (_own0, own1), (_w0, w1) = _pair(tmp_path, clock)
    own1.state = (False, "bus unavailable")
    w1.publish()
    assert own() == (True, "bus ready") and _gauge(1) == 0.0
