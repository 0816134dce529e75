"""Certificates for TLS tests, made at test time with trustme (never committed).

``Pki(dir)`` is a CA with its PEM in ``dir``; ``server()`` issues a certificate for 127.0.0.1 and
localhost, ``client(name)`` one naming ``name`` (subject CN and DNS SAN), optionally expired;
``Pki(dir, "other")`` is a second, unrelated CA. ``served_serial`` reads the serial number of the
certificate a TLS port serves, the way a client sees it.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


class Pki:
    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.dir = directory
        self.name = name
        self.ca = trustme.CA(organization_name=f"telemetry-gateway tests {name}")
        self.ca_file = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._issued = 0

    def _write(self, leaf: trustme.LeafCert, stem: str) -> Pair:
        self._issued += 1
        pair = Pair(self.dir / f"{self.name}-{stem}-{self._issued}.crt",
                    self.dir / f"{self.name}-{stem}-{self._issued}.key")
        pair.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(pair.key))
        return pair

    def server(self) -> Pair:
        return self._write(self.ca.issue_cert("127.0.0.1", "localhost", common_name="gateway"), "server")

    def client(self, name: str, *, expired: bool = False) -> Pair:
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            leaf = self.ca.issue_cert(name, common_name=name, not_before=now - datetime.timedelta(days=30),
                                      not_after=now - datetime.timedelta(days=1))
        else:
            leaf = self.ca.issue_cert(name, common_name=name)
        return self._write(leaf, f"client-{name}")

    def client_context(self, client: Pair | None = None, alpn: str = "http/1.1") -> ssl.SSLContext:
        """A client context trusting this CA, presenting ``client`` if given."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols([alpn])
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx


def install(pair: Pair, cert_file: Path, key_file: Path) -> None:
    """Replace the files a gateway serves with ``pair``, each by an atomic rename."""
    for src, dst in ((pair.cert, cert_file), (pair.key, key_file)):
        tmp = dst.with_suffix(dst.suffix + ".new")
        tmp.write_bytes(src.read_bytes())
        tmp.replace(dst)


def serial_of(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """The serial number of the certificate served on 127.0.0.1:``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def handshake_refused(port: int, ctx: ssl.SSLContext, request: bytes) -> str | None:
    """How the server refused this client (an alert or a reset), or None if it got an answer.

    Under TLS 1.3 the client's side of the handshake ends before the server has checked the
    client's certificate, so the refusal arrives as an alert on the first read.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            data = tls.recv(1024)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if data else "closed without an answer"
