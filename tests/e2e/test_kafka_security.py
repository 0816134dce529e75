"""Authenticated TLS to Kafka: SDK -> gateway -> Kafka (SASL_SSL) -> pipelines -> file sink.

Against the stack's secured Kafka variant on private ports (``tests/e2e/secured_kafka.py``):
SASL_SSL with SCRAM users and a PLAIN user, and SSL requiring a client certificate, beside the
open listener. The gateway's producer, the pipelines' consumer, dead-letter producer and topic
admin all go through ``bus/kafka/client.py``.

Wrong credentials: the gateway stays up, ``/readyz`` names the refused credential and clients
get retryable refusals; the pipelines worker stays up, its log names the credential, and the
data waits in Kafka. With the credentials fixed and the processes restarted everything arrives.
No log line ever holds a password, right or wrong.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from otlp.signals import Signal
from tests.e2e.kafka_pipeline import (
    Clients,
    PipelineProcess,
    in_kafka,
    kafka_env,
    missing,
    received,
    unique_prefix,
)
from tests.e2e.secured_kafka import PLAIN_USER, SCRAM_USER, SecuredKafka, secured_kafka
from tests.gateway_process import GatewayProcess, running_gateway
from tests.sdk_otlp import spans_payload
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PASSWORD_ENV = "KAFKA_SASL_PASSWORD"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    with secured_kafka(tmp_path_factory.mktemp("secured-kafka")) as k:
        yield k


def _sasl_env(k: SecuredKafka, prefix: str, mechanism: str, *, password_file: Path | None = None,
              password_env: str | None = None, user: str = SCRAM_USER) -> dict[str, str]:
    env = kafka_env(k.sasl_ssl, prefix, TG_BUS__KAFKA__SECURITY_PROTOCOL="SASL_SSL",
                    TG_BUS__KAFKA__SASL_MECHANISM=mechanism, TG_BUS__KAFKA__SASL_USERNAME=user,
                    TG_BUS__KAFKA__SSL_CA_FILE=str(k.pki.ca_file))
    if password_file is not None:
        env["TG_BUS__KAFKA__SASL_PASSWORD_FILE"] = str(password_file)
    if password_env is not None:
        env["TG_BUS__KAFKA__SASL_PASSWORD_ENV"] = PASSWORD_ENV
        env[PASSWORD_ENV] = password_env
    return env


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    return path


def _exactly_once(clients: Clients, pipeline: PipelineProcess) -> None:
    wait_for(lambda: missing(clients.sent, received(pipeline)) == 0, within=90,
             what=f"every acknowledged item in the file sink:\n{pipeline.log()}")
    got = received(pipeline)
    assert sum(got["traces"].values()) == len(clients.sent.spans)
    assert sum(got["logs"].values()) == len(clients.sent.logs)
    assert sum(got["metrics"].values()) == len(clients.sent.points)


def _no_secret_in(logs: list[str], *secrets: str) -> None:
    for text in logs:
        for secret in secrets:
            assert secret not in text, "a password appears in a log"


def test_sdk_to_pipelines_over_sasl_ssl_scram(kafka: SecuredKafka, tmp_path: Path) -> None:
    prefix = unique_prefix("sasl")
    password_file = _secret_file(tmp_path / "kafka-password", kafka.scram_password)
    gw_env = _sasl_env(kafka, prefix, "SCRAM-SHA-512", password_file=password_file)
    pipe_env = _sasl_env(kafka, prefix, "SCRAM-SHA-256", password_env=kafka.scram_password)
    pipeline = PipelineProcess(pipe_env)
    try:
        with running_gateway(gw_env) as gw:
            pipeline.start()
            clients = Clients(gw)
            clients.rounds(2)
            assert clients.sent.refused_exports == 0
            assert len(clients.sent.spans) == 2 * 40
            _exactly_once(clients, pipeline)
            gateway_log = gw.log()
        assert pipeline.stop() == 0
        _no_secret_in([gateway_log, pipeline.log()], kafka.scram_password)
    finally:
        pipeline.cleanup()


@pytest.mark.parametrize("how", ["SASL_SSL PLAIN", "SSL client certificate"])
def test_plain_and_client_certificate_reach_kafka(kafka: SecuredKafka, tmp_path: Path, how: str) -> None:
    prefix = unique_prefix("kafka_tls")
    if how == "SSL client certificate":
        env = kafka_env(kafka.ssl, prefix, TG_BUS__KAFKA__SECURITY_PROTOCOL="SSL",
                        TG_BUS__KAFKA__SSL_CA_FILE=str(kafka.pki.ca_file),
                        TG_BUS__KAFKA__SSL_CERT_FILE=str(kafka.client.cert),
                        TG_BUS__KAFKA__SSL_KEY_FILE=str(kafka.client.key))
    else:
        env = _sasl_env(kafka, prefix, "PLAIN", user=PLAIN_USER,
                        password_file=_secret_file(tmp_path / "pw", kafka.plain_password))
    with running_gateway(env) as gw:
        clients = Clients(gw)
        clients.round()
        assert clients.sent.refused_exports == 0
        # Read back through the open listener: every acknowledged item is in the topics.
        got = in_kafka(kafka.plaintext, prefix)
        assert sum(got["traces"].values()) == len(clients.sent.spans) == 40
        assert sum(got["logs"].values()) == len(clients.sent.logs) == 40
        assert sum(got["metrics"].values()) == len(clients.sent.points)
        _no_secret_in([gw.log()], kafka.plain_password)


def _post_spans(gw: GatewayProcess) -> tuple[int, str | None]:
    req = urllib.request.Request(gw.http_url + "/v1/traces", data=spans_payload("default")[0],
                                 headers={"Content-Type": "application/x-protobuf"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


def test_wrong_credentials_are_named_and_nothing_is_lost(kafka: SecuredKafka, tmp_path: Path) -> None:
    prefix = unique_prefix("badcred")
    wrong = "wrong-" + kafka.scram_password[::-1]
    good_file = _secret_file(tmp_path / "good", kafka.scram_password)
    bad_file = _secret_file(tmp_path / "bad", wrong)
    logs: list[str] = []

    # A gateway with the right password puts data in Kafka.
    with running_gateway(_sasl_env(kafka, prefix, "SCRAM-SHA-512", password_file=good_file)) as gw:
        clients = Clients(gw)
        clients.round()
        assert clients.sent.refused_exports == 0
        logs.append(gw.log())

    # A pipelines worker with the wrong one: up, says which credential was refused, writes nothing.
    pipeline = PipelineProcess(_sasl_env(kafka, prefix, "SCRAM-SHA-256", password_env=wrong))
    try:
        pipeline.start(joined=False)
        wait_for(lambda: "refused the SASL SCRAM-SHA-256 credentials of user 'tg-scram'" in pipeline.log(),
                 within=60, what=f"the worker's log to name the refused credential:\n{pipeline.log()}")
        assert f"bus.kafka.sasl_password_env (${PASSWORD_ENV})" in pipeline.log()
        assert pipeline.proc is not None and pipeline.proc.poll() is None, "the worker must stay up"
        assert sum(sum(c.values()) for c in received(pipeline).values()) == 0
        waiting = in_kafka(kafka.plaintext, prefix)
        assert sum(waiting["traces"].values()) == len(clients.sent.spans), "the data waits in Kafka"
        assert pipeline.stop() == 0
        logs.append(pipeline.log())

        # Fixed and restarted: everything arrives.
        pipeline.env["TG_BUS__KAFKA__SASL_PASSWORD_ENV"] = PASSWORD_ENV
        pipeline.env[PASSWORD_ENV] = kafka.scram_password
        pipeline.start()
        _exactly_once(clients, pipeline)

        # A gateway with the wrong password: up, unready, naming the credential; clients told to retry.
        gw = GatewayProcess(_sasl_env(kafka, prefix, "SCRAM-SHA-512", password_file=bad_file))
        try:
            gw.start(until_ready=False)
            wait_for(lambda: "refused the SASL SCRAM-SHA-512 credentials" in gw.readyz()[1], within=30,
                     what=f"/readyz to name the refused credential:\n{gw.log()}")
            status, body = gw.readyz()
            assert status == 503 and "bus.kafka.sasl_password_file" in body and "tg-scram" in body, body
            assert _post_spans(gw) == (503, "5"), "HTTP: a retryable refusal with a Retry-After"
            with grpc.insecure_channel(gw.grpc_target) as channel:
                call = channel.unary_unary(f"/{Signal.TRACES.spec.grpc_service}/Export")
                with pytest.raises(grpc.RpcError) as refused:
                    call(spans_payload("default")[0], timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert gw.proc is not None and gw.proc.poll() is None
            assert gw.stop() == 0
            logs.append(gw.log())
        finally:
            gw.cleanup()

        # The gateway fixed and restarted: what it takes arrives too.
        with running_gateway(_sasl_env(kafka, prefix, "SCRAM-SHA-512", password_file=good_file)) as gw:
            clients.aim_at(gw)
            clients.round()
            assert clients.sent.refused_exports == 0
            logs.append(gw.log())
        assert len(clients.sent.spans) == 2 * 40
        _exactly_once(clients, pipeline)
        assert pipeline.stop() == 0
        logs.append(pipeline.log())
    finally:
        pipeline.cleanup()
    _no_secret_in(logs, kafka.scram_password, wrong)
