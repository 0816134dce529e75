"""TLS and mTLS at the edge, driven by the OpenTelemetry SDK's own exporters.

SDK exporter over TLS (gRPC and HTTP, a test CA) -> gateway subprocess -> file sink: every item
of all three signals lands. With a client CA (mTLS) a client with no certificate, an expired
one or one from another CA is refused in the handshake on both OTLP ports, and a certificate
mapped in ``auth.client_cert_tenants`` decides the tenant over ``tenant.id`` and X-Scope-OrgID.
A certificate replaced on disk is served to new connections without a restart, on the gRPC,
HTTP and admin ports, and so is a replaced client CA (a broken one keeps the previous CA).
Certificates come from trustme, made here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.gateway_process import GatewayProcess, running_gateway, sink_items
from tests.sdk_otlp import client_resource, finished_logs, finished_spans, metrics_data
from tests.tls_certs import Pair, Pki, handshake_refused, install, serial_of, served_serial
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SPANS_PER_EXPORT = 2 * 3  # finished_spans(traces=2, children=2): a root and two children each
LOGS_PER_EXPORT = 3 + 1  # finished_logs(n=3): three string bodies and one map body
METRICS_PER_EXPORT = 5  # metrics_data: one metric per instrument kind
EXPECTED = {"traces": SPANS_PER_EXPORT, "logs": LOGS_PER_EXPORT, "metrics": METRICS_PER_EXPORT}
_OK = (SpanExportResult.SUCCESS, LogRecordExportResult.SUCCESS, MetricExportResult.SUCCESS)


def _tls_env(prefix: str, server: Pair, client_ca: Path | None = None,
             reload_s: float = 0.0) -> dict[str, str]:
    env = {f"TG_{prefix}__TLS__CERT_FILE": str(server.cert), f"TG_{prefix}__TLS__KEY_FILE": str(server.key)}
    if client_ca is not None:
        env[f"TG_{prefix}__TLS__CLIENT_CA_FILE"] = str(client_ca)
    if reload_s:
        env[f"TG_{prefix}__TLS__RELOAD_INTERVAL_S"] = str(reload_s)
    return env


def _export_all(gw: GatewayProcess, transport: str, pki: Pki, client: Pair | None = None,
                headers: dict[str, str] | None = None, forged_tenant: str | None = None) -> None:
    """One export per signal with the SDK's exporters over TLS; each must succeed."""
    res = client_resource("tls-test", forged_tenant=forged_tenant)
    exporters: dict[str, Any]
    spans, _ = finished_spans(res, traces=2, children=2)
    batches: dict[str, Any] = {"traces": spans, "logs": finished_logs(res, 3), "metrics": metrics_data(res)}
    if transport == "grpc":
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_file.read_bytes(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None)
        kwargs: dict[str, Any] = {"endpoint": f"https://127.0.0.1:{gw.grpc_port}", "credentials": creds,
                                  "timeout": 10}
        if headers:
            kwargs["headers"] = {k.lower(): v for k, v in headers.items()}
        exporters = {"traces": GrpcSpanExporter(**kwargs), "logs": GrpcLogExporter(**kwargs),
                     "metrics": GrpcMetricExporter(**kwargs)}
    else:
        base = f"https://127.0.0.1:{gw.http_port}"
        common: dict[str, Any] = {"certificate_file": str(pki.ca_file), "timeout": 10, "headers": headers}
        if client is not None:
            common.update(client_certificate_file=str(client.cert), client_key_file=str(client.key))
        exporters = {"traces": HttpSpanExporter(endpoint=base + "/v1/traces", **common),
                     "logs": HttpLogExporter(endpoint=base + "/v1/logs", **common),
                     "metrics": HttpMetricExporter(endpoint=base + "/v1/metrics", **common)}
    for signal, exporter in exporters.items():
        try:
            result = exporter.export(batches[signal])
        finally:
            exporter.shutdown()
        assert result in _OK, f"{transport} {signal} export over TLS: {result}\n{gw.log()}"


def _landed(gw: GatewayProcess, tenant: str, expected: dict[str, int]) -> None:
    for signal, n in expected.items():
        wait_for(lambda s=signal, n=n: len(sink_items(gw.read_sink(tenant, s), s)) >= n,  # type: ignore[misc]
                 within=15, what=f"{n} {signal} items of tenant {tenant} in the file sink")
        got = len(sink_items(gw.read_sink(tenant, signal), signal))
        assert got == n, f"{signal}: {got} items landed for tenant {tenant}, sent {n}"


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporters_deliver_every_signal_over_tls(pki: Pki, transport: str) -> None:
    server = pki.server()
    env = {**_tls_env("SERVER", server), **_tls_env("ADMIN", server)}
    with running_gateway(env, admin_ssl=pki.client_context()) as gw:
        assert gw.readyz()[0] == 200  # over TLS to the admin port
        _export_all(gw, transport, pki)
        _landed(gw, "default", EXPECTED)
        got = gw.metric("gateway_received_items_total", transport=transport, signal="traces")
        assert got == SPANS_PER_EXPORT


def test_mtls_refuses_clients_without_a_good_certificate(pki: Pki, tmp_path: Path) -> None:
    other = Pki(tmp_path, "other")
    env = _tls_env("SERVER", pki.server(), client_ca=pki.ca_file)
    refused_clients = {
        "no certificate": pki.client_context(),
        "expired certificate": pki.client_context(pki.client("old.example", expired=True)),
        "certificate from another CA": pki.client_context(other.client("b.example")),
    }
    request = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    with running_gateway(env) as gw:
        for what, ctx in refused_clients.items():
            for port, alpn in ((gw.http_port, "http/1.1"), (gw.grpc_port, "h2")):
                ctx.set_alpn_protocols([alpn])
                how = handshake_refused(port, ctx, request)
                assert how is not None, f"a client with {what} got an answer on port {port} ({alpn})"
        # The SDK's exporters with no certificate get no export through either.
        res = client_resource("tls-test")
        spans, _ = finished_spans(res, traces=1, children=0)
        http = HttpSpanExporter(endpoint=f"https://127.0.0.1:{gw.http_port}/v1/traces",
                                certificate_file=str(pki.ca_file), timeout=2)
        assert http.export(spans) == SpanExportResult.FAILURE
        http.shutdown()
        assert gw.metric("gateway_received_items_total") == 0
        # A good certificate gets through on both.
        good = pki.client("c.example")
        _export_all(gw, "grpc", pki, good)
        _export_all(gw, "http", pki, good)
        _landed(gw, "default", {s: 2 * n for s, n in EXPECTED.items()})
        assert "Traceback" not in gw.log(), "a refused handshake must not log a traceback"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_client_certificate_tenant_beats_header_and_attribute(pki: Pki, transport: str) -> None:
    env = {**_tls_env("SERVER", pki.server(), client_ca=pki.ca_file),
           "TG_AUTH__TRUST_TENANT_HEADER": "true",
           "TG_AUTH__CLIENT_CERT_TENANTS": "{b.example: b}"}
    with running_gateway(env) as gw:
        # Mapped: tenant b, whatever the header and the resource attribute claim.
        _export_all(gw, transport, pki, pki.client("b.example"), headers={"X-Scope-OrgID": "a"},
                    forged_tenant="a")
        # Not mapped: the trusted header decides, as without mTLS.
        _export_all(gw, transport, pki, pki.client("c.example"), headers={"X-Scope-OrgID": "c"})
        _landed(gw, "b", EXPECTED)
        _landed(gw, "c", EXPECTED)
        assert gw.read_sink("a", "traces") == []
        for attrs, _ in sink_items(gw.read_sink("b", "traces"), "traces"):
            assert attrs["tenant.id"] == "b"


def test_replaced_certificate_is_served_without_restart(pki: Pki, tmp_path: Path) -> None:
    first = pki.server()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    install(first, cert_file, key_file)
    live = Pair(cert_file, key_file)
    env = {**_tls_env("SERVER", live, reload_s=0.2), **_tls_env("ADMIN", live, reload_s=0.2)}
    with running_gateway(env, admin_ssl=pki.client_context()) as gw:
        ports = {"grpc": (gw.grpc_port, "h2"), "http": (gw.http_port, "http/1.1"),
                 "admin": (gw.admin_port, "http/1.1")}
        for name, (port, alpn) in ports.items():
            assert served_serial(port, pki.client_context(alpn=alpn)) == serial_of(first), name
        second = pki.server()
        install(second, cert_file, key_file)
        for name, (port, alpn) in ports.items():
            wait_for(lambda p=port, a=alpn: served_serial(p, pki.client_context(alpn=a)) == serial_of(second),  # type: ignore[misc]
                     within=10, what=f"the new certificate served on the {name} port")
        _export_all(gw, "grpc", pki)
        _export_all(gw, "http", pki)
        _landed(gw, "default", {s: 2 * n for s, n in EXPECTED.items()})
        assert gw.readyz()[0] == 200


def _replace(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` by an atomic rename, as a secret or ConfigMap update does."""
    tmp = dst.with_suffix(dst.suffix + ".new")
    tmp.write_bytes(src.read_bytes())
    tmp.replace(dst)


_PROBE = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


def test_replaced_client_ca_verifies_new_connections_without_restart(pki: Pki, tmp_path: Path) -> None:
    rotated = Pki(tmp_path, "rotated")
    ca_file = tmp_path / "client-ca.pem"
    _replace(pki.ca_file, ca_file)
    env = _tls_env("SERVER", pki.server(), client_ca=ca_file, reload_s=0.2)
    old_client, new_client = pki.client("old.example"), rotated.client("new.example")
    with running_gateway(env) as gw:
        ports = {"grpc": (gw.grpc_port, "h2"), "http": (gw.http_port, "http/1.1")}
        for name, (port, alpn) in ports.items():
            refusal = handshake_refused(port, pki.client_context(new_client, alpn), _PROBE)
            assert refusal is not None, f"{name}: a client of the CA not yet installed got an answer"
        _export_all(gw, "grpc", pki, old_client)
        _export_all(gw, "http", pki, old_client)

        _replace(rotated.ca_file, ca_file)
        for name, (port, alpn) in ports.items():
            wait_for(lambda p=port, a=alpn: handshake_refused(p, pki.client_context(new_client, a),  # type: ignore[misc]
                                                              _PROBE) is None,
                     within=10, what=f"a client of the new CA accepted on the {name} port")
            refusal = handshake_refused(port, pki.client_context(old_client, alpn), _PROBE)
            assert refusal is not None, f"{name}: the rotated-out CA still verifies clients"
        _export_all(gw, "grpc", pki, new_client)
        _export_all(gw, "http", pki, new_client)
        _landed(gw, "default", {s: 4 * n for s, n in EXPECTED.items()})

        # A broken replacement: counted and logged, and the CA in service stays.
        ca_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        wait_for(lambda: gw.metric("gateway_tls_reload_failures_total", listener="server") >= 1,
                 within=10, what="the broken client CA file counted as a failed reload")
        assert "client CA file changed but does not load" in gw.log()
        # The exports above took longer than the interval, so gRPC's per-handshake fetcher re-reads
        # (and rejects) the broken file on this first handshake; HTTP's timer did so already.
        for name, (port, alpn) in ports.items():
            assert handshake_refused(port, pki.client_context(new_client, alpn), _PROBE) is None, \
                f"{name}: a broken client CA file replaced the one in service"
        # Both transports re-read it through one source since: counted once, and failing until fixed.
        assert gw.metric("gateway_tls_reload_failures_total", listener="server") == 1
        assert gw.metric("gateway_tls_reload_failing", listener="server") == 1
        _export_all(gw, "grpc", pki, new_client)
        _export_all(gw, "http", pki, new_client)
        assert gw.readyz()[0] == 200
        _replace(rotated.ca_file, ca_file)
        wait_for(lambda: gw.metric("gateway_tls_reload_failing", listener="server") == 0,
                 within=10, what="the failing gauge back to 0 once the client CA loads")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The HTTP exporter uses requests, which honours proxy variables; loopback must go direct.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # requests lets these replace the exporter's certificate_file (a session's verify path loses
    # to them), so with them set the test CA would never be used.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    yield


@pytest.mark.parametrize(("transport", "client"), [("grpc", "auto"), ("http", "aiohttp"), ("http", "raw")])
def test_bench_senders_speak_tls(pki: Pki, transport: str, client: str) -> None:
    """The bench's load generator reaches a TLS gateway (``bench run --tls``)."""
    import asyncio

    from bench.transports import make_sender
    from otlp.signals import Signal
    from tests.sdk_otlp import spans_payload

    payload, _ = spans_payload("default", traces=1, children=1)
    with running_gateway(_tls_env("SERVER", pki.server())) as gw:
        sender = make_sender(transport, grpc_target=gw.grpc_target,
                             http_url=f"https://127.0.0.1:{gw.http_port}", signal=Signal.TRACES,
                             connections=1, timeout_s=10, http_client=client, tls_ca_file=str(pki.ca_file))

        async def send() -> tuple[int, str | None]:
            await sender.start()
            try:
                return await sender.send(payload, 2)
            finally:
                await sender.close()

        assert asyncio.run(send()) == (2, None)
