"""Every refusal: its status, its protocol-shaped body, its metric, and a gateway still serving.

One gateway (auth on, one rate-limited tenant, small size caps) serves all checks; each check
ends by sending a valid request, so a refusal that wedged or killed the process shows up where
it happened.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.gateway_process import GatewayProcess, resource_attrs, running_gateway, sink_items
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

MAX_REQUEST = 256 * 1024
MAX_INFLATED = 1024 * 1024
KEYS = {"Bearer key-acme": "acme", "Bearer key-slow": "slow"}
ACME = {"authorization": "Bearer key-acme"}
SLOW = {"authorization": "Bearer key-slow"}
PB = {"content-type": "application/x-protobuf"}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

CONFIG = f"""
server:
  max_request_bytes: {MAX_REQUEST}
  max_decompressed_bytes: {MAX_INFLATED}
auth:
  enabled: true
  api_keys:
    key-acme: acme
    key-slow: slow
limits:
  tenants:
    slow:
      items_per_second: 0.5
      items_burst: 5
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = tmp_path_factory.mktemp("refusals") / "gateway.yaml"
    cfg.write_text(CONFIG)
    with running_gateway(extra_args=["--config", str(cfg)]) as gw:
        yield gw


def spans_request(n: int, service: str = "refusals", tenant_attr: str | None = None) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attrs = [("service.name", service)] + ([("tenant.id", tenant_attr)] if tenant_attr else [])
    for key, value in attrs:
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope = rs.scope_spans.add()
    for i in range(n):
        span = scope.spans.add()
        span.trace_id = uuid.uuid4().bytes
        span.span_id = uuid.uuid4().bytes[:8]
        span.name = f"op-{i}"
    return req.SerializeToString()


def post(gw: GatewayProcess, path: str, body: bytes, headers: dict[str, str],
         method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


Metadata = tuple[tuple[str, str], ...]


def grpc_export(gw: GatewayProcess, body: bytes, metadata: Metadata,
                compression: grpc.Compression | None = None) -> grpc.RpcError | bytes:
    with grpc.insecure_channel(gw.grpc_target) as channel:
        call = channel.unary_unary(TRACE_EXPORT)  # no (de)serializers: raw bytes both ways
        try:
            out: bytes = call(body, metadata=metadata, timeout=10, compression=compression)
            return out
        except grpc.RpcError as exc:
            return exc


def pb_status(body: bytes) -> status_pb2.Status:
    st = status_pb2.Status()
    st.ParseFromString(body)
    return st


def assert_still_serving(gw: GatewayProcess) -> None:
    status, headers, body = post(gw, "/v1/traces", spans_request(1),
                                 {"content-type": "application/x-protobuf", **ACME})
    assert status == 200, body
    assert headers.get("x-correlation-id")
    ok = grpc_export(gw, spans_request(1), tuple(ACME.items()))
    assert isinstance(ok, bytes), ok


def refused(gw: GatewayProcess, reason: str, transport: str) -> float:
    return gw.metric("gateway_refused_requests_total", reason=reason, transport=transport)


def test_malformed_protobuf(gateway: GatewayProcess) -> None:
    before = refused(gateway, "malformed", "http")
    status, headers, body = post(gateway, "/v1/traces", b"\x0a\xff\xff\xff\x0f garbage",
                                 {"content-type": "application/x-protobuf", **ACME})
    assert status == 400
    assert headers["content-type"] == "application/x-protobuf"
    st = pb_status(body)
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "ExportTraceServiceRequest" in st.message
    assert refused(gateway, "malformed", "http") == before + 1

    before_grpc = refused(gateway, "malformed", "grpc")
    err = grpc_export(gateway, b"\x0a\xff\xff\xff\x0f garbage", tuple(ACME.items()))
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in (err.details() or "")
    assert refused(gateway, "malformed", "grpc") == before_grpc + 1
    assert_still_serving(gateway)


def test_malformed_json_gets_json_status(gateway: GatewayProcess) -> None:
    status, headers, body = post(gateway, "/v1/logs", b'{"resourceLogs": [{"resource": 7}]}',
                                 {"content-type": "application/json", **ACME})
    assert status == 400
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert doc["message"]
    status, _h, body = post(gateway, "/v1/logs", b"{not json", {"content-type": "application/json", **ACME})
    assert status == 400 and json.loads(body)["message"]
    assert_still_serving(gateway)


def test_unsupported_media_type(gateway: GatewayProcess) -> None:
    before = refused(gateway, "unsupported_media_type", "http")
    status, _h, body = post(gateway, "/v1/traces", b"hello", {"content-type": "text/plain", **ACME})
    assert status == 415
    assert "text/plain" in pb_status(body).message
    status, _h, _b = post(gateway, "/v1/traces", spans_request(1),
                          {"content-type": "application/x-protobuf", "content-encoding": "br", **ACME})
    assert status == 415
    assert refused(gateway, "unsupported_media_type", "http") == before + 2
    assert_still_serving(gateway)


def test_unknown_path_and_wrong_method(gateway: GatewayProcess) -> None:
    status, _h, _b = post(gateway, "/v1/profiles", b"", {"content-type": "application/x-protobuf", **ACME})
    assert status == 404
    status, headers, _b = post(gateway, "/v1/traces", b"", {**ACME}, method="GET")
    assert status == 405
    assert headers["allow"] == "POST"
    assert_still_serving(gateway)


def test_too_large_body(gateway: GatewayProcess) -> None:
    before = refused(gateway, "too_large", "http")
    big = spans_request(1) + b"\x1a" + b"\x80\x80\x10" + b"x" * (MAX_REQUEST + 10)
    status, headers, body = post(gateway, "/v1/traces", big, {**PB, **ACME})
    assert status == 413
    assert str(MAX_REQUEST) in pb_status(body).message
    assert headers.get("connection") == "close"
    assert refused(gateway, "too_large", "http") == before + 1

    # gRPC: grpc enforces max_receive_message_length (= max_decompressed_bytes) itself, and
    # the gateway counts it.
    before = refused(gateway, "too_large", "grpc")
    err = grpc_export(gateway, b"\x1a\x80\x80\x80\x01" + b"x" * (MAX_INFLATED + 100), tuple(ACME.items()))
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused(gateway, "too_large", "grpc") == before + 1
    assert_still_serving(gateway)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_gzip_bomb_is_refused_without_inflating_it(gateway: GatewayProcess) -> None:
    """200 MiB of zeros compress to ~200 KiB; refusing must not cost anything like 200 MiB.
    Over both transports: HTTP inflates in the gateway's code, gRPC in grpc's."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1024 * 1024)
    bomb = b"".join(comp.compress(chunk) for _ in range(200)) + comp.flush()
    assert len(bomb) < MAX_REQUEST  # passes the compressed cap; only inflation can catch it
    assert gateway.proc is not None
    before = refused(gateway, "too_large", "http")
    status, _h, body = post(gateway, "/v1/traces", bomb,
                            {"content-type": "application/x-protobuf", "content-encoding": "gzip", **ACME})
    assert status == 413
    assert "decompressed" in pb_status(body).message
    assert refused(gateway, "too_large", "http") == before + 1

    # gRPC: the client compresses 64 MiB of zeros; grpc stops inflating at the cap.
    before = refused(gateway, "too_large", "grpc")
    err = grpc_export(gateway, b"\0" * (64 * 1024 * 1024), tuple(ACME.items()), grpc.Compression.Gzip)
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused(gateway, "too_large", "grpc") == before + 1
    assert _peak_rss_kib(gateway.proc.pid) < 150 * 1024, "the bomb was inflated far past the cap"
    assert_still_serving(gateway)


def test_gzip_request_within_limits_is_accepted(gateway: GatewayProcess) -> None:
    status, _h, body = post(gateway, "/v1/traces", gzip.compress(spans_request(3)),
                            {"content-type": "application/x-protobuf", "content-encoding": "gzip", **ACME})
    assert status == 200, body
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(body)
    assert not resp.HasField("partial_success")


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "nope"}])
def test_unauthenticated(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    before = refused(gateway, "unauthenticated", "http")
    status, _h, body = post(gateway, "/v1/traces", spans_request(1),
                            {"content-type": "application/x-protobuf", **headers})
    assert status == 401
    assert pb_status(body).code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused(gateway, "unauthenticated", "http") == before + 1

    err = grpc_export(gateway, spans_request(1), tuple(headers.items()))
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert_still_serving(gateway)


def _retry_delay(err: grpc.RpcError) -> float:
    trailers: Any = err.trailing_metadata() or ()
    details = dict(trailers).get("grpc-status-details-bin")
    assert details, f"no status details in {trailers!r}"
    st = pb_status(details)
    info = error_details_pb2.RetryInfo()
    assert st.details and st.details[0].Unpack(info)
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


def test_rate_limited(gateway: GatewayProcess) -> None:
    before_items = gateway.metric("gateway_refused_items_total", reason="rate_limited")
    status, _h, _b = post(gateway, "/v1/traces", spans_request(5),
                          {"content-type": "application/x-protobuf", **SLOW})
    assert status == 200  # the burst
    status, headers, body = post(gateway, "/v1/traces", spans_request(5),
                                 {"content-type": "application/x-protobuf", **SLOW})
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert pb_status(body).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    err = grpc_export(gateway, spans_request(5), tuple(SLOW.items()))
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _retry_delay(err) > 0
    assert gateway.metric("gateway_refused_items_total", reason="rate_limited") == before_items + 10
    assert refused(gateway, "rate_limited", "grpc") >= 1
    assert_still_serving(gateway)  # other tenants are not limited


def test_forged_tenant_is_replaced(gateway: GatewayProcess) -> None:
    service = f"forger-{uuid.uuid4().hex[:8]}"
    status, headers, _b = post(gateway, "/v1/traces", spans_request(2, service, tenant_attr="victim"),
                               {**PB, "x-correlation-id": "req-42", **ACME})
    assert status == 200
    assert headers["x-correlation-id"] == "req-42"

    def landed() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        items = sink_items(gateway.read_sink("acme", "traces"), "traces")
        return [(a, i) for a, i in items if a.get("service.name") == service]

    found = wait_for(landed, within=15, what="the forger's spans in tenant acme's file")
    assert len(found) == 2
    assert all(a["tenant.id"] == "acme" and a["correlation.id"] == "req-42" for a, _i in found)
    assert gateway.sink_files("victim", "traces") == []
    for line in gateway.read_sink("acme", "traces"):
        for rs in line["resourceSpans"]:
            keys = [kv["key"] for kv in rs["resource"]["attributes"]]
            assert keys.count("tenant.id") == 1, resource_attrs(rs["resource"])


def test_two_workers_serve_and_shut_down() -> None:
    with running_gateway(workers=2) as gw:
        for _ in range(20):  # SO_REUSEPORT spreads connections over both workers
            status, _h, body = post(gw, "/v1/traces", spans_request(1), PB)
            assert status == 200, body
            assert isinstance(grpc_export(gw, spans_request(1), ()), bytes)
        assert gw.metric("gateway_received_items_total", signal="traces") == 40
        wait_for(lambda: len(sink_items(gw.read_sink("default", "traces"), "traces")) == 40,
                 within=15, what="40 spans in the workers' files")
        files = gw.sink_files("default", "traces")
        assert [p.name for p in files] == ["traces-w0.jsonl", "traces-w1.jsonl"]  # both workers served


def test_readyz_answers_for_every_worker_whichever_answers() -> None:
    """A wedged worker (SIGSTOP) makes the host not ready, also through the worker that answers."""
    with running_gateway(workers=2) as gw:
        assert gw.proc is not None
        workers = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        assert len(workers) == 2
        status, why = gw.readyz()
        assert status == 200 and "2 workers ready" in why
        wedged = int(workers[1])
        os.kill(wedged, signal.SIGSTOP)
        try:
            # Probes reaching the stopped worker time out (status 0); the live one answers 503.
            wait_for(lambda: (a := gw.readyz())[0] == 503 and "worker 1: no report" in a[1], within=20,
                     what="/readyz 503 for the stopped worker")
        finally:
            os.kill(wedged, signal.SIGCONT)
        wait_for(lambda: gw.readyz()[0] == 200, within=15, what="/readyz 200 once the worker runs again")


def test_correlation_id_in_grpc_initial_metadata(gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        call = channel.unary_unary(TRACE_EXPORT)
        _resp, info = call.with_call(spans_request(1), metadata=(*ACME.items(), ("x-correlation-id", "g-7")),
                                     timeout=10)
        assert dict(info.initial_metadata())["x-correlation-id"] == "g-7"
        _resp, info = call.with_call(spans_request(1), metadata=tuple(ACME.items()), timeout=10)
        assert len(dict(info.initial_metadata())["x-correlation-id"]) == 36  # a fresh UUIDv7
