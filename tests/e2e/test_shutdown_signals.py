"""Stopping the embedded gateway never loses what it acknowledged, whoever gets the signal.

A terminal's Ctrl-C goes to the whole foreground process group and a service manager may signal
every process of the cgroup, so the file sink's helper process gets the signal too. Each test
runs a real gateway (embedded default: memory bus, file sink) in its own process group, sends
requests until acknowledged, signals, and checks every acknowledged span is in the file sink
exactly once and the exit code: 0 when all was written, 1 (and the count in the log) otherwise.
Under load, every request in flight at the signal is answered, OK or a retryable refusal.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp.wire import encode_varint
from tests.gateway_process import GatewayProcess, sink_items
from tests.waiting import wait_for

REQUESTS, SPANS = 5, 50
EXIT_WITHIN_S = 30.0


def request(i: int, prefix: str, for_the_helper: bool = False) -> bytes:
    """``for_the_helper``: each span sets its name twice (valid protobuf, the last one wins), which
    the file sink's C writer leaves to the reference converter in its helper process."""
    if not for_the_helper:
        req = ExportTraceServiceRequest()
        scope = req.resource_spans.add().scope_spans.add()
        for j in range(SPANS):
            scope.spans.add(name=f"{prefix}{i}-s{j}", trace_id=bytes([i + 1]) * 16,
                            span_id=(j + 1).to_bytes(8, "big"))
        return req.SerializeToString()
    spans = b""
    for j in range(SPANS):
        name = f"{prefix}{i}-s{j}".encode()
        span = (b"\x0a\x10" + bytes([i + 1]) * 16 + b"\x12\x08" + (j + 1).to_bytes(8, "big")
                + 2 * (b"\x2a" + encode_varint(len(name)) + name))
        spans += b"\x12" + encode_varint(len(span)) + span  # ScopeSpans.spans
    rs = b"\x12" + encode_varint(len(spans)) + spans  # ResourceSpans.scope_spans
    return b"\x0a" + encode_varint(len(rs)) + rs


def send_all(gw: GatewayProcess, prefix: str = "r", for_the_helper: bool = False) -> set[str]:
    """Send the requests one after the other; the names of the spans acknowledged (all of them)."""
    acked: set[str] = set()
    for i in range(REQUESTS):
        post = urllib.request.Request(gw.http_url + "/v1/traces", request(i, prefix, for_the_helper),
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


def running_helper(gw: GatewayProcess) -> int | None:
    """The file sink's conversion helper, if it runs: the gateway's spawned child that is not the
    resource tracker (which multiprocessing also starts)."""
    assert gw.proc is not None
    for pid in children(gw.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    return None


def helper_pid(gw: GatewayProcess) -> int:
    """The helper's pid, once a record that needs it has started it."""
    wait_for(lambda: running_helper(gw) is not None, what="the file sink's helper to start")
    pid = running_helper(gw)
    assert pid is not None
    return pid


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


@pytest.mark.parametrize("for_the_helper", [False, True], ids=["no-helper", "with-helper"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_whole_group_loses_nothing(gw: GatewayProcess, signum: signal.Signals,
                                                   for_the_helper: bool) -> None:
    gw.start()
    acked = send_all(gw, for_the_helper=for_the_helper)
    if for_the_helper:
        helper_pid(gw)  # it is running, and gets the signal too
    assert gw.proc is not None
    os.killpg(gw.proc.pid, signum)  # as a terminal's Ctrl-C, or a service manager, would
    assert wait_exit(gw) == 0, gw.log()
    names = written(gw)
    assert len(names) == len(acked) and set(names) == acked, gw.log()


def test_a_killed_helper_is_replaced_and_nothing_is_lost_or_doubled(gw: GatewayProcess) -> None:
    gw.start()
    first = send_all(gw, for_the_helper=True)  # the helper starts for the first of these
    wait_for(lambda: len(written(gw)) == len(first), what="the first requests to be written")
    os.kill(helper_pid(gw), signal.SIGKILL)
    second = send_all(gw, prefix="q", for_the_helper=True)
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


# Ctrl-C under load: HTTP (keep-alive) and gRPC clients send continuously, each until its first
# refusal after the signal, while the whole group gets SIGINT.
_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CLIENTS = 4  # of each transport


class Load:
    """Clients sending until they meet an error after the stop; outcomes and acknowledged spans."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gw = gateway
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.acked: set[str] = set()
        self.sent = 0

    def _next(self, prefix: str) -> tuple[bytes, set[str]]:
        with self.lock:
            i = self.sent
            self.sent += 1
        body = request(i % 200, f"{prefix}{i}-")
        return body, {f"{prefix}{i}-{i % 200}-s{j}" for j in range(50)}

    def _record(self, outcome: str, names: set[str] | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if names:
                self.acked |= names

    def http_client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.http_port, timeout=10)
        while True:
            body, names = self._next("h")
            try:
                conn.request("POST", "/v1/traces", body, {"content-type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._record(f"http {type(exc).__name__}")
                conn.close()
                return
            self._record(f"http {resp.status}", names if resp.status == 200 else None)
            if resp.status != 200:
                return

    def grpc_client(self) -> None:
        with grpc.insecure_channel(self.gw.grpc_target) as channel:
            export = channel.unary_unary(_EXPORT)
            while True:
                body, names = self._next("g")
                try:
                    export(body, timeout=10)
                except grpc.RpcError as exc:
                    self._record(f"grpc {exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
                    return
                self._record("grpc OK", names)


def test_ctrl_c_under_load_answers_every_request_and_loses_nothing(gw: GatewayProcess) -> None:
    gw.start()
    load = Load(gw)
    threads = [threading.Thread(target=load.http_client) for _ in range(CLIENTS)]
    threads += [threading.Thread(target=load.grpc_client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_for(lambda: load.outcomes["http 200"] >= 20 and load.outcomes["grpc OK"] >= 20,
             what="both transports under load")
    assert gw.proc is not None
    os.killpg(gw.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C
    for t in threads:
        t.join(30)
    assert wait_exit(gw) == 0, gw.log()
    answers = {"http 200", "http 503", "grpc OK", "grpc UNAVAILABLE: gateway is shutting down"}
    assert set(load.outcomes) <= answers, dict(load.outcomes)
    names = written(gw)
    assert len(names) == len(set(names)) and load.acked <= set(names), gw.log()
