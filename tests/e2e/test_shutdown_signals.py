"""Stopping the embedded gateway never loses what it acknowledged, whoever gets the signal.

A terminal's Ctrl-C goes to the whole foreground process group and a service manager may signal
every process of the cgroup, so the file sink's helper process gets the signal too. Each test
runs a real gateway (embedded default: memory bus, file sink) in its own process group, sends
requests until acknowledged, signals, and checks every acknowledged span is in the file sink
exactly once and the exit code: 0 when all was written, 1 (and the count in the log) otherwise.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.gateway_process import GatewayProcess, sink_items
from tests.waiting import wait_for

REQUESTS, SPANS = 5, 50
EXIT_WITHIN_S = 30.0


def request(i: int, prefix: str) -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for j in range(SPANS):
        scope.spans.add(name=f"{prefix}{i}-s{j}", trace_id=bytes([i + 1]) * 16,
                        span_id=(j + 1).to_bytes(8, "big"))
    return req.SerializeToString()


def send_all(gw: GatewayProcess, prefix: str = "r") -> set[str]:
    """Send the requests one after the other; the names of the spans acknowledged (all of them)."""
    acked: set[str] = set()
    for i in range(REQUESTS):
        post = urllib.request.Request(gw.http_url + "/v1/traces", request(i, prefix),
                                      {"content-type": "application/x-protobuf"})
        with urllib.request.urlopen(post, timeout=10) as resp:
            assert resp.status == 200
        acked.update(f"{prefix}{i}-s{j}" for j in range(SPANS))
    return acked


def written(gw: GatewayProcess) -> list[str]:
    return [span["name"] for _, span in sink_items(gw.read_sink("default", "traces"), "traces")]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def helper_pid(gw: GatewayProcess) -> int:
    """The file sink's conversion helper: the gateway's spawned child that is not the resource
    tracker (which multiprocessing also starts)."""
    assert gw.proc is not None
    for pid in children(gw.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    raise AssertionError(f"no helper among the gateway's children {children(gw.proc.pid)}")


def wait_exit(gw: GatewayProcess) -> int:
    assert gw.proc is not None
    proc = gw.proc
    wait_for(lambda: proc.poll() is not None, within=EXIT_WITHIN_S, what="the gateway to exit")
    return proc.returncode


@pytest.fixture
def gw() -> Iterator[GatewayProcess]:
    gateway = GatewayProcess()  # spawned in a session of its own: a group to signal
    try:
        yield gateway
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_whole_group_loses_nothing(gw: GatewayProcess, signum: signal.Signals) -> None:
    gw.start()
    acked = send_all(gw)
    assert gw.proc is not None
    os.killpg(gw.proc.pid, signum)  # as a terminal's Ctrl-C, or a service manager, would
    assert wait_exit(gw) == 0, gw.log()
    names = written(gw)
    assert len(names) == len(acked) and set(names) == acked, gw.log()


def test_a_killed_helper_is_replaced_and_nothing_is_lost_or_doubled(gw: GatewayProcess) -> None:
    gw.start()
    first = send_all(gw)
    wait_for(lambda: len(written(gw)) == len(first), what="the first requests to be written")
    os.kill(helper_pid(gw), signal.SIGKILL)
    second = send_all(gw, prefix="q")
    assert gw.stop() == 0, gw.log()
    names = written(gw)
    assert len(names) == len(first | second) and set(names) == first | second, gw.log()


def test_acknowledged_data_that_cannot_be_written_makes_the_exit_code_say_so(gw: GatewayProcess) -> None:
    gw.data_dir.mkdir(parents=True)
    (gw.data_dir / "default").write_text("a file where the tenant's directory should be")
    gw.start()
    send_all(gw)
    assert gw.proc is not None
    os.killpg(gw.proc.pid, signal.SIGTERM)
    assert wait_exit(gw) == 1, gw.log()
    assert f"{REQUESTS * SPANS} item(s), were not written" in gw.log()
