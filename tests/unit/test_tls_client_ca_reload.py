"""The client CA bundle (mTLS) re-read like the certificate and key: ``CertSource.refresh`` takes a
replaced CA file, keeps the one in service when the new file does not load (and counts that), and
``HttpTls`` (OTLP/HTTP and admin) verifies new handshakes with the new CA and no longer with the
old. Real files and real TLS handshakes over loopback; certificates from trustme."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from prometheus_client import REGISTRY

from gateway.receivers.tls import CertSource, HttpTls, TlsFileError
from settings.config import TlsServerConfig
from tests.waiting import await_for


def _failures(listener: str) -> float:
    return REGISTRY.get_sample_value("gateway_tls_reload_failures_total", {"listener": listener}) or 0.0


def _replace(data: bytes, dst: Path) -> None:
    """Write ``dst`` by an atomic rename (a new inode: the change is seen whatever the mtime)."""
    tmp = dst.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.replace(dst)


class _Files:
    """A server certificate and key from ``server_ca`` and a client CA file holding ``first``."""

    def __init__(self, directory: Path, server_ca: trustme.CA, first: trustme.CA) -> None:
        leaf = server_ca.issue_cert("127.0.0.1")
        self.cert, self.key, self.ca = directory / "tls.crt", directory / "tls.key", directory / "ca.pem"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(self.key))
        _replace(first.cert_pem.bytes(), self.ca)

    def config(self, reload_interval_s: float = 0.0) -> TlsServerConfig:
        return TlsServerConfig(cert_file=str(self.cert), key_file=str(self.key), client_ca_file=str(self.ca),
                               reload_interval_s=reload_interval_s)


@pytest.fixture()
def cas() -> tuple[trustme.CA, trustme.CA, trustme.CA]:
    return trustme.CA(), trustme.CA(), trustme.CA()  # the server's, the first client CA, the next


def test_refresh_takes_a_replaced_client_ca(tmp_path: Path, cas: tuple[trustme.CA, ...]) -> None:
    server_ca, first, second = cas
    files = _Files(tmp_path, server_ca, first)
    source = CertSource(files.config(), "server.tls")
    pair = (source.cert_pem, source.key_pem)
    assert source.client_ca_pem == first.cert_pem.bytes()
    assert not source.refresh()  # nothing changed

    _replace(second.cert_pem.bytes(), files.ca)
    assert source.refresh()
    assert source.client_ca_pem == second.cert_pem.bytes()
    assert (source.cert_pem, source.key_pem) == pair  # the pair is untouched


@pytest.mark.parametrize("broken", [b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nMIIB\n",
                                    b"\xff\xfe binary"])
def test_broken_client_ca_keeps_the_one_in_service_and_is_counted(
        tmp_path: Path, cas: tuple[trustme.CA, ...], broken: bytes) -> None:
    server_ca, first, second = cas
    files = _Files(tmp_path, server_ca, first)
    source = CertSource(files.config(), "admin.tls")
    before = _failures("admin")

    _replace(broken, files.ca)
    assert not source.refresh()
    assert source.client_ca_pem == first.cert_pem.bytes()
    assert _failures("admin") == before + 1

    # Once the file is whole, the next reload takes it.
    _replace(second.cert_pem.bytes(), files.ca)
    assert source.refresh()
    assert source.client_ca_pem == second.cert_pem.bytes()
    assert _failures("admin") == before + 1


def test_missing_client_ca_file_keeps_the_one_in_service(tmp_path: Path, cas: tuple[trustme.CA, ...]) -> None:
    server_ca, first, _ = cas
    files = _Files(tmp_path, server_ca, first)
    source = CertSource(files.config(), "server.tls")
    before = _failures("server")
    files.ca.unlink()  # mid-rotation by delete-then-create
    assert not source.refresh()
    assert source.client_ca_pem == first.cert_pem.bytes()
    assert _failures("server") == before + 1


async def _handshake(port: int, server_ca: trustme.CA, client: trustme.LeafCert) -> bool:
    """True when the server answers a client presenting ``client`` (TLS 1.3 reports a refused
    client certificate as an alert on the first read, so a byte is exchanged)."""
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    client.configure_cert(ctx)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="127.0.0.1")
    except (ssl.SSLError, ConnectionError):
        return False
    try:
        writer.write(b"?")
        await writer.drain()
        return await reader.read(1) == b"!"
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        writer.close()


def test_http_listener_verifies_new_handshakes_with_the_replaced_ca(
        tmp_path: Path, cas: tuple[trustme.CA, ...]) -> None:
    server_ca, first, second = cas
    files = _Files(tmp_path, server_ca, first)
    old_client, new_client = first.issue_cert("old.example"), second.issue_cert("new.example")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.read(1):
                writer.write(b"!")
                await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass  # a refused client
        finally:
            writer.close()

    async def scenario() -> None:
        tls = HttpTls(files.config(reload_interval_s=0.05), "admin.tls")
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls.context)
        port = server.sockets[0].getsockname()[1]
        tls.start()
        try:
            assert await _handshake(port, server_ca, old_client)
            assert not await _handshake(port, server_ca, new_client)
            _replace(second.cert_pem.bytes(), files.ca)

            async def new_accepted() -> bool:
                return await _handshake(port, server_ca, new_client)

            await await_for(new_accepted, within=10, what="a client of the new CA accepted")
            assert not await _handshake(port, server_ca, old_client), "the rotated-out CA still verifies"
        finally:
            tls.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


@pytest.mark.parametrize(("broken", "why"), [
    (b"not a certificate\n", "does not contain a certificate"),
    (b"", "Empty certificate data"),
    (b"\xff\xfe binary", "not ASCII PEM"),
])
def test_a_client_ca_that_does_not_load_is_named_with_its_reason(
        tmp_path: Path, cas: tuple[trustme.CA, ...], broken: bytes, why: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # The warning said "(SSLError: None)" for a CA file without a certificate: neither the file
    # nor the reason. At start the same error stopped the worker with OpenSSL's bare text.
    server_ca, first, _ = cas
    files = _Files(tmp_path, server_ca, first)
    source = CertSource(files.config(), "server.tls")
    _replace(broken, files.ca)
    with caplog.at_level("WARNING", logger="gateway.receivers.tls"):
        assert not source.refresh()
    message = caplog.records[-1].getMessage()
    assert f"server.tls.client_ca_file {files.ca}: " in message and why in message, message
    assert "None" not in message and "_ssl.c" not in message, message
    with pytest.raises(TlsFileError, match=f"server.tls.client_ca_file {files.ca}: .*{why}"):
        CertSource(files.config(), "server.tls")


def test_a_key_that_does_not_match_is_named_at_start(tmp_path: Path, cas: tuple[trustme.CA, ...]) -> None:
    server_ca, first, _ = cas
    files = _Files(tmp_path, server_ca, first)
    server_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(files.key))  # another key
    with pytest.raises(TlsFileError, match=f"admin.tls.cert_file {files.cert} with key_file {files.key}: "
                                         "KEY_VALUES_MISMATCH"):
        CertSource(files.config(), "admin.tls")


def test_a_nanosecond_reload_interval_does_not_rearm_the_timer_at_once(
        tmp_path: Path, cas: tuple[trustme.CA, ...]) -> None:
    # reload_interval: 1ns (valid for the Collector, which checks at each handshake) re-armed the
    # HTTP/admin timer at once, forever: the gateway held a whole core while idle.
    server_ca, first, _ = cas
    files = _Files(tmp_path, server_ca, first)

    async def scenario() -> tuple[float, float]:
        tls = HttpTls(files.config(reload_interval_s=1e-9), "server.tls")
        loop = asyncio.get_running_loop()
        reloaded = asyncio.Event()
        reload = tls._reload

        def counted() -> None:
            reload()
            reloaded.set()

        tls._reload = counted  # type: ignore[method-assign]
        tls.start()
        try:
            assert tls._timer is not None
            armed = tls._timer.when() - loop.time()
            await asyncio.wait_for(reloaded.wait(), 5)
            assert tls._timer is not None
            rearmed = tls._timer.when() - loop.time()  # re-armed by the reload that just ran
        finally:
            tls.stop()
        return armed, rearmed

    armed, rearmed = asyncio.run(scenario())
    # Armed 10 ms ahead (less the microseconds since), not 1 ns: the loop is free in between.
    assert armed > 0.005 and rearmed > 0.005, (armed, rearmed)


@pytest.mark.parametrize("broken", [b"not a certificate\n", b"", b"\xff\xfe binary"])
def test_a_client_ca_that_does_not_load_stops_the_start_in_one_line(
        tmp_path: Path, cas: tuple[trustme.CA, ...], broken: bytes) -> None:
    # An empty or non-ASCII CA file ended the start in a traceback (ValueError, which the worker
    # does not report as it reports an OSError); so did the named error before it was an OSError.
    from tests.gateway_process import GatewayProcess

    server_ca, first, _ = cas
    files = _Files(tmp_path, server_ca, first)
    _replace(broken, files.ca)
    env = {"TG_SERVER__TLS__CERT_FILE": str(files.cert), "TG_SERVER__TLS__KEY_FILE": str(files.key),
           "TG_SERVER__TLS__CLIENT_CA_FILE": str(files.ca)}
    gw = GatewayProcess(env, workdir=tmp_path / "gw")
    try:
        with pytest.raises(AssertionError, match="gateway exited with 1 during start"):
            gw.start(within=30)
        log = gw.log()
    finally:
        gw.cleanup()
    assert f"worker 0 cannot start: server.tls.client_ca_file {files.ca}: " in log, log
    assert "Traceback" not in log, log
