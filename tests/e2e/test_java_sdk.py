"""The real OpenTelemetry Java SDK, sending with the JDK's ``java.net.http.HttpClient``, lands.

``tests/e2e/java/OtlpJdkSender.java`` (run by the JDK's single-file source launcher on the jars
``bash stack/up`` installs: ``opentelemetry-sdk``, ``-exporter-otlp`` without its OkHttp sender,
``-exporter-sender-jdk``) exports spans, log records and metrics over OTLP/HTTP protobuf to a
gateway on the embedded default. The JDK client offers ``Upgrade: h2c`` on every cleartext
request, which the gateway once answered with 400 and so lost everything; it must now answer over
HTTP/1.1 and every item must land in the file sink exactly once, stamped with the tenant and a
correlation id. A byte relay between the two records what the JDK client put on the wire, so the
test proves the offer was made and not just that some client got through.

OTLP/gRPC is not covered here: the Java exporter's gRPC senders are OkHttp's and grpc-java's
managed channel; the JDK sender is HTTP only (``java.net.http`` cannot speak HTTP/2 without TLS
except by that same upgrade, which gRPC clients do not use).
"""

from __future__ import annotations

import re
import select
import socket
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stackctl import kafka, otel_java

from tests import stackenv
from tests.gateway_process import GatewayProcess, running_gateway, sink_items
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SENDER = Path(__file__).resolve().parent / "java" / "OtlpJdkSender.java"
N = 40
RUN_TIMEOUT_S = 45  # a run takes 2-3 s (JVM start and in-memory compile included)
ROUTES = 3  # the program's counter adds over routes /a, /b, /c


def _classpath() -> str:
    libs = otel_java.libs_dir(stackenv.STACK_CACHE, otel_java.default_version())
    if not any(libs.glob("opentelemetry-exporter-sender-jdk-*.jar")):
        pytest.fail(f"the OpenTelemetry Java SDK is not installed at {libs}; run `bash stack/up otel-java`",
                    pytrace=False)
    return f"{libs}/*"


class _Relay(socketserver.ThreadingTCPServer):
    """Forwards loopback connections to ``upstream`` both ways, keeping what clients sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Pipe)
        self.upstream = upstream
        self.sent: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def client_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.sent)


class _Pipe(socketserver.BaseRequestHandler):
    server: _Relay

    def handle(self) -> None:
        client: socket.socket = self.request
        with socket.create_connection(self.server.upstream, timeout=10) as upstream:
            peer = {client: upstream, upstream: client}
            while True:
                ready, _, _ = select.select(list(peer), [], [], 60)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:  # either side closed: the exchange is over
                        return
                    peer[sock].sendall(data)
                    if sock is client:
                        with self.server.lock:
                            self.server.sent.append(data)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway() as gw:
        yield gw


def _run_sender(endpoint: str, service: str, compression: str) -> dict[str, str]:
    """Run the Java program; its ``sent k=v ...`` line as a dict. Fails on a non-zero exit."""
    argv = [kafka.java(), "-cp", _classpath(), str(SENDER), endpoint, service, str(N), compression]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the Java sender did not finish within {RUN_TIMEOUT_S} s:\n"
                             f"{exc.stdout!r}\n{exc.stderr!r}") from exc
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, f"the Java sender exited {proc.returncode}\n{output}"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("sent ")), None)
    assert line is not None, output
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def _landed(gw: GatewayProcess, signal: str, service: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(attrs, item) for attrs, item in sink_items(gw.read_sink("default", signal), signal)
            if attrs.get("service.name") == service]


def _points(metric: dict[str, Any]) -> list[dict[str, Any]]:
    kind = next(k for k in ("sum", "gauge", "histogram", "exponentialHistogram", "summary") if k in metric)
    points: list[dict[str, Any]] = metric[kind]["dataPoints"]
    return points


def _attr(item: dict[str, Any], key: str) -> Any:
    return next(next(iter(kv["value"].values())) for kv in item.get("attributes", []) if kv["key"] == key)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_java_sdk_with_jdk_http_sender_lands_exactly_once(gateway: GatewayProcess, compression: str) -> None:
    service = f"java-{uuid.uuid4().hex[:8]}"
    relay = _Relay(("127.0.0.1", gateway.http_port))
    serving = threading.Thread(target=relay.serve_forever, daemon=True)
    serving.start()
    try:
        sent = _run_sender(relay.url, service, compression)
    finally:
        relay.shutdown()
        relay.server_close()
        serving.join(timeout=10)
    metric_points = ROUTES + 2  # the counter's routes, the histogram, the gauge
    assert sent["sender"] == "io.opentelemetry.exporter.sender.jdk.internal.JdkHttpSenderProvider", sent
    assert (sent["spans"], sent["logs"], sent["metric_points"], sent["failed_exports"]) == (
        str(N), str(N), str(metric_points), "0"), sent

    # What the JDK client sent: OTLP/HTTP requests of the Java exporter, each offering h2c.
    wire = relay.client_bytes()
    requests = re.findall(rb"POST /v1/(traces|logs|metrics) HTTP/1\.1\r\n", wire)
    assert {b"traces", b"logs", b"metrics"} <= set(requests), wire[:2000]
    assert len(re.findall(rb"(?im)^upgrade: h2c\r$", wire)) == len(requests), wire[:2000]
    assert re.search(rb"(?im)^user-agent: OTel-OTLP-Exporter-Java/", wire), wire[:2000]
    if compression == "gzip":
        assert len(re.findall(rb"(?im)^content-encoding: gzip\r$", wire)) == len(requests)

    def all_landed() -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] | None:
        found = {s: _landed(gateway, s, service) for s in ("traces", "logs", "metrics")}
        points = sum(len(_points(m)) for _a, m in found["metrics"])
        done = len(found["traces"]) >= N and len(found["logs"]) >= N and points >= metric_points
        return found if done else None

    found = wait_for(all_landed, within=15, what=f"{N} spans, {N} logs, {metric_points} points of {service}")
    for signal, items in found.items():
        for attrs, _item in items:
            assert attrs["tenant.id"] == "default", (signal, attrs)
            assert attrs.get("correlation.id"), (signal, attrs)

    spans = [item for _a, item in found["traces"]]
    assert sorted(s["name"] for s in spans) == sorted(f"java-op-{i}" for i in range(N))
    logs = [item for _a, item in found["logs"]]
    assert sorted(r["body"]["stringValue"] for r in logs) == sorted(f"java line {i}" for i in range(N))
    # Each log record was emitted inside its span and carries that span's context.
    span_of = {int(_attr(s, "i")): (s["traceId"], s["spanId"]) for s in spans}
    assert {int(_attr(r, "i")): (r["traceId"], r["spanId"]) for r in logs} == span_of

    assert sum(len(_points(m)) for _a, m in found["metrics"]) == metric_points
    metrics = {m["name"]: _points(m) for _a, m in found["metrics"]}
    assert sorted(metrics) == ["java.latency", "java.requests", "java.temperature"]
    assert len(metrics["java.requests"]) == ROUTES
    assert sum(int(p["asInt"]) for p in metrics["java.requests"]) == N
    assert [int(p["count"]) for p in metrics["java.latency"]] == [N]
    assert [p["asDouble"] for p in metrics["java.temperature"]] == [21.5]
