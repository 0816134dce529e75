"""``gateway_tls_reload_failing`` and a failed reload counted once: the gauge is 0 from the start,
1 while the files on disk changed but do not load, and 0 again once they load or are back to the
set served; ``gateway_tls_reload_failures_total`` counts a broken change once however often it is
re-read, and once for ``server.tls`` although OTLP/gRPC and OTLP/HTTP both re-read it (one shared
``CertSource``). Real files and the real grpc credentials; certificates from trustme."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import trustme
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.receivers.tls import CertSource, HttpTls, grpc_credentials
from settings.config import TlsServerConfig


def _failures(listener: str) -> float:
    return REGISTRY.get_sample_value("gateway_tls_reload_failures_total", {"listener": listener}) or 0.0


def _failing(listener: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_tls_reload_failing", {"listener": listener})


def _replace(data: bytes, dst: Path) -> None:
    tmp = dst.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.replace(dst)


@pytest.fixture()
def config(tmp_path: Path) -> TlsServerConfig:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, client_ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    client_ca.write_bytes(trustme.CA().cert_pem.bytes())
    return TlsServerConfig(cert_file=str(cert), key_file=str(key), client_ca_file=str(client_ca),
                           reload_interval_s=0.01)


def test_failing_gauge_is_zero_from_the_start(config: TlsServerConfig) -> None:
    metrics.tls_reload_failing.labels(listener="admin").set(1)  # left by an earlier test
    CertSource(config, "admin.tls")
    assert _failing("admin") == 0


def test_a_broken_change_is_failing_until_it_loads_and_counted_once(config: TlsServerConfig) -> None:
    # Before: counted again at every re-read, and no state an alert could hold for an interval
    # longer than its window (reload_interval: 1h never fired an increase[15m] > 0 for 15m).
    source = CertSource(config, "server.tls")
    good = Path(config.client_ca_file).read_bytes()
    before = _failures("server")
    _replace(b"not a certificate\n", Path(config.client_ca_file))
    for _ in range(5):
        assert not source.refresh()
    assert _failing("server") == 1
    assert _failures("server") == before + 1
    _replace(good, Path(config.client_ca_file))  # the same bytes: loads, nothing new to serve
    assert not source.refresh()
    assert _failing("server") == 0
    _replace(b"", Path(config.client_ca_file))  # another broken change: counted again
    assert not source.refresh()
    assert (_failing("server"), _failures("server")) == (1, before + 2)


def test_files_put_back_as_served_end_the_failing(config: TlsServerConfig, tmp_path: Path) -> None:
    source = CertSource(config, "admin.tls")
    kept = tmp_path / "kept.pem"
    os.rename(config.client_ca_file, kept)  # gone: a change that does not load
    assert not source.refresh()
    assert _failing("admin") == 1
    os.rename(kept, config.client_ca_file)  # back, same inode and mtime: the set served
    assert not source.refresh()
    assert _failing("admin") == 0


def test_grpc_and_http_share_one_source_and_count_a_failure_once(config: TlsServerConfig) -> None:
    # Before: the gRPC fetcher and the HTTP timer each re-read server.tls through a source of
    # their own, so one broken change was counted twice.
    source = CertSource(config, "server.tls")
    before = _failures("server")
    new_ca = trustme.CA().cert_pem.bytes()

    async def scenario() -> None:
        http = HttpTls(config, "server.tls", source)
        grpc_credentials(config, "server.tls", source)
        try:
            _replace(b"not a certificate\n", Path(config.client_ca_file))
            for _ in range(5):
                http._reload()  # the HTTP timer's re-read: the same broken files count once
                http.stop()  # the timer it re-armed: the next re-read is this loop's
            assert source.refresh() is False  # as the gRPC fetcher does at a handshake
            assert _failures("server") == before + 1
            _replace(new_ca, Path(config.client_ca_file))
            assert source.refresh()  # taken by the gRPC side: HTTP must still rebuild from it
            http._reload()
            assert http._built == source.generation == 1
        finally:
            http.stop()

    asyncio.run(scenario())
    assert _failing("server") == 0


def test_client_ca_file_reload_polls_when_the_interval_is_zero(config: TlsServerConfig) -> None:
    # The Collector watches the CA file (fsnotify) with client_ca_file_reload: true; here the HTTP
    # timer and the gRPC fetcher poll at CLIENT_CA_RELOAD_DEFAULT_S instead of never.
    import dataclasses

    from settings.config import CLIENT_CA_RELOAD_DEFAULT_S

    never = dataclasses.replace(config, reload_interval_s=0.0)
    assert HttpTls(never, "admin.tls")._interval == 0.0
    polled = dataclasses.replace(never, client_ca_file_reload=True)
    assert HttpTls(polled, "admin.tls")._interval == CLIENT_CA_RELOAD_DEFAULT_S
