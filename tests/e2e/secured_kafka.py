"""The stack's secured Kafka variant on private ports: SASL_SSL (PLAIN, SCRAM-SHA-256/512) and
SSL with client certificates, beside the open listener, as ``stackctl.kafka.SecureListeners``
configures it. Certificates come from trustme (``tests.tls_certs``), made per test; the
passwords are random per run, so a test can grep every log for them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stackctl import kafka

from bench.subprocs import free_ports
from tests.e2e.private_kafka import HOST, PrivateKafka
from tests.secured_stores import pkcs8
from tests.tls_certs import Pair, Pki

SCRAM_USER = "tg-scram"
PLAIN_USER = "tg-plain"


@dataclass
class SecuredKafka:
    cluster: PrivateKafka
    pki: Pki
    secure: kafka.SecureListeners
    scram_password: str
    plain_password: str
    client: Pair  # a client certificate the SSL listener accepts

    @property
    def plaintext(self) -> str:
        return self.cluster.bootstrap

    @property
    def sasl_ssl(self) -> str:
        return f"{HOST}:{self.secure.sasl_ssl_port}"

    @property
    def ssl(self) -> str:
        return f"{HOST}:{self.secure.ssl_port}"


def _pkcs8_keystore(pair: Pair, path: Path) -> Path:
    """Kafka's PEM keystore: an unencrypted PKCS#8 key, then the certificate chain."""
    path.write_bytes(pkcs8(pair.key.read_bytes()) + pair.cert.read_bytes())
    return path


@contextmanager
def secured_kafka(directory: Path) -> Iterator[SecuredKafka]:
    """Start the secured one-node Kafka; leave it stopped and removed."""
    pki = Pki(directory, "kafka-ca")
    sasl_ssl_port, ssl_port = free_ports(2)
    scram_password, plain_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    secure = kafka.SecureListeners(
        sasl_ssl_port=sasl_ssl_port, ssl_port=ssl_port,
        keystore=_pkcs8_keystore(pki.server(), directory / "kafka-keystore.pem"),
        truststore=pki.ca_file,
        plain_users={PLAIN_USER: plain_password}, scram_users={SCRAM_USER: scram_password})
    cluster = PrivateKafka(1, secure=secure)
    try:
        cluster.start()
        yield SecuredKafka(cluster, pki, secure, scram_password, plain_password, pki.client("tg-client"))
    finally:
        cluster.cleanup()
