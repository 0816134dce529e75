"""A Kafka broker refusing our credentials counts in ``gateway_kafka_auth_failures_total{client,
reason}``, once per refused connection attempt, and the clients keep retrying.

Against the stack's secured Kafka variant on private ports (``tests/e2e/secured_kafka.py``): a
wrong SCRAM password is refused on SASL_SSL (reason ``sasl``) for the producer, the consumer and
topic admin, each under its own ``client``; a broker certificate signed by a CA we do not trust
fails the handshake (reason ``tls``); and a gateway with the wrong password serves the count on
its /metrics while it keeps trying.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from bus.kafka import client
from bus.kafka.topics import ensure_topics
from settings.config import KafkaConfig
from tests.e2e.kafka_pipeline import kafka_env, unique_prefix
from tests.e2e.secured_kafka import SCRAM_USER, SecuredKafka, secured_kafka
from tests.gateway_process import GatewayProcess
from tests.tls_certs import Pki
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

METRIC = "gateway_kafka_auth_failures_total"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    with secured_kafka(tmp_path_factory.mktemp("secured-kafka")) as k:
        yield k


def _count(role: str, reason: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"client": role, "reason": reason}) or 0.0


def _wrong_password(k: SecuredKafka, tmp_path: Path) -> KafkaConfig:
    (tmp_path / "wrong").write_text("wrong-" + k.scram_password[::-1])
    return KafkaConfig(bootstrap_servers=k.sasl_ssl, security_protocol="SASL_SSL",
                       sasl_mechanism="SCRAM-SHA-512", sasl_username=SCRAM_USER,
                       sasl_password_file=str(tmp_path / "wrong"), ssl_ca_file=str(k.pki.ca_file),
                       request_timeout_ms=10_000)


async def test_refused_sasl_counts_once_per_attempt_per_client(kafka: SecuredKafka, tmp_path: Path) -> None:
    cfg = _wrong_password(kafka, tmp_path)
    before = {role: _count(role, "sasl") for role in ("producer", "consumer", "admin")}

    producer = client.durable_producer(cfg, "auth-test", max_request_size=1 << 20)
    try:
        for _ in range(2):
            with pytest.raises(client.CredentialError, match="refused the SASL SCRAM-SHA-512 credentials"):
                await client.start(producer, cfg)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap_servers, group_id="auth-test",
                                request_timeout_ms=cfg.request_timeout_ms, **client.security(cfg))
    try:
        with pytest.raises(client.CredentialError):
            await client.start(consumer, cfg)
    finally:
        await consumer.stop()

    with pytest.raises(client.CredentialError):
        await ensure_topics(cfg, ["auth_test"])

    after = {role: _count(role, "sasl") for role in before}
    assert after == {"producer": before["producer"] + 2, "consumer": before["consumer"] + 1,
                     "admin": before["admin"] + 1}


async def test_an_untrusted_broker_certificate_counts_as_tls(kafka: SecuredKafka, tmp_path: Path) -> None:
    other_ca = Pki(tmp_path, "other-ca")  # not the CA that signed the broker's certificate
    cfg = KafkaConfig(bootstrap_servers=kafka.ssl, security_protocol="SSL", ssl_ca_file=str(other_ca.ca_file),
                      ssl_cert_file=str(kafka.client.cert), ssl_key_file=str(kafka.client.key),
                      request_timeout_ms=10_000)
    before = _count("producer", "tls")
    producer = client.durable_producer(cfg, "auth-test-tls", max_request_size=1 << 20)
    try:
        with pytest.raises(client.CredentialError, match="the broker's certificate is not trusted"):
            await client.start(producer, cfg)
    finally:
        await producer.stop()
    assert _count("producer", "tls") == before + 1


def test_a_gateway_refused_by_kafka_serves_the_count(kafka: SecuredKafka, tmp_path: Path) -> None:
    (tmp_path / "wrong").write_text("wrong-" + kafka.scram_password[::-1])
    env = kafka_env(kafka.sasl_ssl, unique_prefix("authcount"), TG_BUS__KAFKA__SECURITY_PROTOCOL="SASL_SSL",
                    TG_BUS__KAFKA__SASL_MECHANISM="SCRAM-SHA-256", TG_BUS__KAFKA__SASL_USERNAME=SCRAM_USER,
                    TG_BUS__KAFKA__SASL_PASSWORD_FILE=str(tmp_path / "wrong"),
                    TG_BUS__KAFKA__SSL_CA_FILE=str(kafka.pki.ca_file))
    gw = GatewayProcess(env)
    try:
        gw.start(until_ready=False)
        wait_for(lambda: gw.metric(METRIC, client="producer", reason="sasl") >= 2, within=60,
                 what=f"{METRIC} counting the producer's refused attempts:\n{gw.log()}")
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway stays up and keeps trying"
        assert gw.stop() == 0
    finally:
        gw.cleanup()
