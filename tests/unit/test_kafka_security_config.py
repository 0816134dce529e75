"""bus.kafka security settings: what the config accepts and what every Kafka client is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bus.kafka.client import CredentialError, security
from settings.config import ConfigError, KafkaConfig, load

_SASL = {"TG_BUS__KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "TG_BUS__KAFKA__SASL_USERNAME": "tg"}


def test_plaintext_by_default() -> None:
    assert security(load(env={}).bus.kafka) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_reads_the_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = load(env={**_SASL, "TG_BUS__KAFKA__SASL_PASSWORD_FILE": str(tmp_path / "pw"),
                    "TG_BUS__KAFKA__SASL_MECHANISM": "SCRAM-SHA-256"}).bus.kafka
    kw = security(cfg)
    assert kw["sasl_plain_password"] == "s3cret" and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["security_protocol"] == "SASL_SSL"


def test_unreadable_credentials_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_username="tg", sasl_password_env="TG_TEST_PW")
    monkeypatch.delenv("TG_TEST_PW", raising=False)
    with pytest.raises(CredentialError, match=r"bus.kafka.sasl_password_env \(\$TG_TEST_PW\)"):
        security(cfg)
    cfg = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_username="tg",
                      sasl_password_file=str(tmp_path / "missing"))
    with pytest.raises(CredentialError, match=r"bus\.kafka\.sasl_password_file"):
        security(cfg)
    cfg = KafkaConfig(security_protocol="SSL", ssl_ca_file=str(tmp_path / "no-ca.pem"))
    with pytest.raises(CredentialError, match=r"bus\.kafka\.ssl_ca_file"):
        security(cfg)


@pytest.mark.parametrize(("env", "message"), [
    ({"TG_BUS__KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "sasl_username: needed"),
    (_SASL, "set one of sasl_password_file"),
    ({**_SASL, "TG_BUS__KAFKA__SASL_PASSWORD_FILE": "f", "TG_BUS__KAFKA__SASL_PASSWORD_ENV": "E"},
     "set one of sasl_password_file"),
    ({**_SASL, "TG_BUS__KAFKA__SASL_PASSWORD_ENV": "TG_BUS__KAFKA__SASL_PASSWORD"}, "starts with TG_"),
    ({"TG_BUS__KAFKA__SECURITY_PROTOCOL": "SSL", "TG_BUS__KAFKA__SSL_CERT_FILE": "c"}, "go together"),
    ({"TG_BUS__KAFKA__SSL_CA_FILE": "ca.pem"}, "need security_protocol SSL or SASL_SSL"),
    ({"TG_BUS__KAFKA__SASL_MECHANISM": "GSSAPI"}, "is not one of"),
])
def test_bad_kafka_security_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)
