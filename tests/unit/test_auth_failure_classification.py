"""Which answers and connection errors are credential refusals, and what they count: the sinks'
``credentials_refused`` (HTTP 401 / 403, gRPC UNAUTHENTICATED / PERMISSION_DENIED) and the Kafka
client's ``refusal`` (SASL refused, TLS failed), on the real client exception types. Refusals stay
retried: a secret may be rotated while the data waits."""

from __future__ import annotations

import ssl

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailed
from prometheus_client import REGISTRY

from bus.kafka import client
from pipelines.sinks.answers import (
    Verdict,
    classify_grpc,
    classify_http,
    count_credentials_refused,
    credentials_refused,
)
from pipelines.sinks.elasticsearch import item_answers
from settings.config import KafkaConfig

REFUSING = [401, 403, "401", "403", grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
            "UNAUTHENTICATED", "PERMISSION_DENIED"]
NOT_REFUSING = [200, 400, 404, 407, 413, 429, 500, 503, "error", "OK", "UNAVAILABLE",
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK]


@pytest.mark.parametrize("code", REFUSING, ids=str)
def test_credential_refusals_are_recognised(code: int | str | grpc.StatusCode) -> None:
    assert credentials_refused(code)


@pytest.mark.parametrize("code", NOT_REFUSING, ids=str)
def test_other_answers_are_not_credential_refusals(code: int | str | grpc.StatusCode) -> None:
    assert not credentials_refused(code)


def _sink_failures(sink: str, code: str) -> float:
    return REGISTRY.get_sample_value("pipeline_sink_auth_failures_total", {"sink": sink, "code": code}) or 0.0


def test_a_refusal_counts_once_under_its_code() -> None:
    before = (_sink_failures("unit", "403"), _sink_failures("unit", "PERMISSION_DENIED"))
    assert count_credentials_refused("unit", 403)
    assert count_credentials_refused("unit", grpc.StatusCode.PERMISSION_DENIED)
    assert (_sink_failures("unit", "403"), _sink_failures("unit", "PERMISSION_DENIED")) == \
        (before[0] + 1, before[1] + 1)


def test_other_answers_count_nothing() -> None:
    for code in NOT_REFUSING:
        assert not count_credentials_refused("unit-other", code)
        label = code.name if isinstance(code, grpc.StatusCode) else str(code)
        assert _sink_failures("unit-other", label) == 0.0


@pytest.mark.parametrize("status", [401, 403])
def test_refused_http_credentials_stay_retried(status: int) -> None:
    assert classify_http(status).retry


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_refused_grpc_credentials_stay_retried(code: grpc.StatusCode) -> None:
    assert classify_grpc(code, "no").retry


# -- Kafka ------------------------------------------------------------------------------------------

SASL = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="tg",
                   sasl_password_file="/run/secrets/kafka-pw", ssl_ca_file="/run/ca.pem")


def test_kafka_sasl_refusal_names_the_credential_not_its_value() -> None:
    refused = SaslAuthenticationFailed("[Error 58] SaslAuthenticationFailed: Authentication failed "
                                       "during authentication due to invalid credentials")
    found = client.refusal(refused, SASL)
    assert found is not None
    reason, why = found
    assert reason == "sasl"
    assert "'tg'" in why and "bus.kafka.sasl_password_file (/run/secrets/kafka-pw)" in why
    assert "invalid credentials" in why


def test_kafka_tls_failures_are_tls_refusals() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    assert client.refusal(untrusted, SASL) == (
        "tls", "the broker's certificate is not trusted (bus.kafka.ssl_ca_file (/run/ca.pem)): "
               "unable to get local issuer certificate")
    found = client.refusal(ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"), SASL)
    assert found is not None and found[0] == "tls"


@pytest.mark.parametrize("exc", [KafkaConnectionError("Unable to bootstrap"), KafkaTimeoutError(),
                                 ConnectionRefusedError(111, "refused"), TimeoutError()], ids=repr)
def test_kafka_errors_not_about_security_are_not_refusals(exc: BaseException) -> None:
    assert client.refusal(exc, SASL) is None


async def test_the_client_label_is_the_kind_of_client() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:1")
    try:
        assert [client.role_of(c) for c in (producer, consumer, admin)] == ["producer", "consumer", "admin"]
    finally:
        await admin.close()
        await consumer.stop()
        await producer.stop()


def test_a_bulk_item_refused_for_privileges_is_retried_and_seen_as_refusal() -> None:
    body = {"errors": True, "items": [
        {"create": {"status": 201}},
        {"create": {"status": 403, "error": {"type": "security_exception", "reason": "action "
                    "[indices:data/write/bulk[s]] is unauthorized for user [tg]"}}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception",
                                             "reason": "exists"}}},
        {"create": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "bad"}}},
    ]}
    answers, statuses = item_answers(body)
    assert [a.verdict for a in answers] == [Verdict.DONE, Verdict.RETRY, Verdict.DONE, Verdict.REJECT]
    assert "security_exception" in answers[1].detail
    assert {s for s in statuses if credentials_refused(s)} == {403}
