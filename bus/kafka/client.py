"""The one place this project configures a Kafka client.

``durable_producer`` makes a producer with acks=all and idempotence, so whatever it writes (the
bus's batches, the pipelines' dead letters) is durable once acknowledged. ``security`` gives
every client of the brokers (that producer, the pipelines' consumers, topic admin) the same
security: ``bus.kafka.security_protocol`` PLAINTEXT, SSL (a CA, optionally a client certificate),
SASL_PLAINTEXT or SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).

The SASL password comes from a file or an environment variable, read when a client is made (a
rotated Secret is picked up by the next connection); it is handed to the client and never put
in a message. ``start`` starts a client and, when it cannot connect and security is on, asks
one connection why, so logs and ``/readyz`` say which credential the broker refused (aiokafka
itself only says it could not bootstrap), and counts that refusal in
``gateway_kafka_auth_failures_total{client, reason}`` so it can be alerted on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from bus.metrics import KAFKA_AUTH_FAILURES
from settings.config import KafkaConfig

log = logging.getLogger(__name__)

_DIAGNOSE_TIMEOUT_S = 5.0


class CredentialError(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """A configured credential cannot be read or was refused; the message names the setting."""

    retriable = True  # fixed by the operator; every client of Kafka keeps trying meanwhile


def password_source(cfg: KafkaConfig) -> str:
    """Where the SASL password comes from, as the setting that names it (never the value)."""
    if cfg.sasl_password_file:
        return f"bus.kafka.sasl_password_file ({cfg.sasl_password_file})"
    return f"bus.kafka.sasl_password_env (${cfg.sasl_password_env})"


def _password(cfg: KafkaConfig) -> str:
    if cfg.sasl_password_file:
        try:
            return Path(cfg.sasl_password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CredentialError(f"cannot read the SASL password from {password_source(cfg)}: "
                                  f"{exc.strerror or type(exc).__name__}") from None
    value = os.environ.get(cfg.sasl_password_env)
    if value is None:
        raise CredentialError(f"the SASL password is not set: {password_source(cfg)} is not in the "
                              "environment")
    return value


def _ssl_context(cfg: KafkaConfig) -> ssl.SSLContext:
    try:
        ctx: ssl.SSLContext = create_ssl_context(cafile=cfg.ssl_ca_file or None,
                                                 certfile=cfg.ssl_cert_file or None,
                                                 keyfile=cfg.ssl_key_file or None)
        return ctx
    except (OSError, ssl.SSLError) as exc:
        raise CredentialError(f"cannot load TLS files ({_tls_source(cfg)}): {exc}") from None


def _tls_source(cfg: KafkaConfig) -> str:
    names = [f"bus.kafka.{k} ({v})" for k, v in (("ssl_ca_file", cfg.ssl_ca_file),
                                                ("ssl_cert_file", cfg.ssl_cert_file)) if v]
    return ", ".join(names) or "the system's CAs"


def security(cfg: KafkaConfig) -> dict[str, Any]:
    """The keywords every aiokafka client of ``cfg``'s brokers takes: protocol, TLS, SASL.

    Raises ``CredentialError`` (naming the setting) when a password or TLS file cannot be read.
    """
    out: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = _ssl_context(cfg)
    if cfg.security_protocol.startswith("SASL"):
        out.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username,
                   sasl_plain_password=_password(cfg))
    return out


def durable_producer(cfg: KafkaConfig, client_id: str, *, max_request_size: int,
                     compression: str | None = None, linger_ms: int = 0,
                     max_batch_size: int = 16384) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer`` on ``cfg``'s brokers with ``acks=all`` and idempotence; the
    keywords are the per-writer tuning (aiokafka's defaults otherwise)."""
    return AIOKafkaProducer(
        bootstrap_servers=cfg.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=compression,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        max_request_size=max_request_size,
        request_timeout_ms=cfg.request_timeout_ms,
        **security(cfg),
    )


class _Startable(Protocol):
    async def start(self) -> None: ...


def role_of(client: object) -> str:
    """The ``client`` label of ``gateway_kafka_auth_failures_total`` for an aiokafka client:
    consumer, admin or producer; the dead-letter producer passes ``role="dead_letter"``."""
    if isinstance(client, AIOKafkaConsumer):
        return "consumer"
    if isinstance(client, AIOKafkaAdminClient):
        return "admin"
    return "producer"


async def start(client: _Startable, cfg: KafkaConfig, *, role: str | None = None) -> None:
    """``client.start()``; when it cannot connect, raise an error that says why in words an
    operator can act on (which credential was refused), never containing a secret.

    A refusal on security (SASL or TLS) also counts once in ``gateway_kafka_auth_failures_total``
    with ``role`` (default: ``role_of(client)``) and its reason, so it can be alerted on; the
    caller still retries (a rotated secret is read by its next attempt)."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        found = await _diagnosis(cfg)
        if found is None:
            raise
        reason, why = found
        if reason:
            KAFKA_AUTH_FAILURES.labels(role or role_of(client), reason).inc()
        raise CredentialError(why) from exc


async def diagnose(cfg: KafkaConfig) -> str | None:
    """Why one connection to the first bootstrap server fails, when it is the security set-up
    (TLS or SASL refused, a credential unreadable); None when it is not that or security is off."""
    found = await _diagnosis(cfg)
    return None if found is None else found[1]


async def _diagnosis(cfg: KafkaConfig) -> tuple[str, str] | None:
    """``diagnose``'s answer with its reason for the metric: ``sasl`` or ``tls`` (the broker side
    refused), ``""`` for a credential of ours that cannot be read."""
    if cfg.security_protocol == "PLAINTEXT":
        return None
    host, _, port = cfg.bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), client_id=cfg.client_id, request_timeout_ms=cfg.request_timeout_ms,
                        **security(cfg)), _DIAGNOSE_TIMEOUT_S)
    except CredentialError as exc:
        return "", str(exc)
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:
        return refusal(exc, cfg)
    conn.close()
    return None


def refusal(exc: BaseException, cfg: KafkaConfig) -> tuple[str, str] | None:
    """A connection error's reason (``sasl`` | ``tls``) and words naming the setting to check;
    None when the error is not about security (a broker down, a timeout). Pure: the real
    aiokafka / ssl exception types in, no I/O."""
    if isinstance(exc, SaslAuthenticationFailed):
        return "sasl", (f"Kafka refused the SASL {cfg.sasl_mechanism} credentials of user "
                        f"{cfg.sasl_username!r} (bus.kafka.sasl_username, password from "
                        f"{password_source(cfg)}): {_server_says(exc)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"the broker's certificate is not trusted ({_tls_source(cfg)}): {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or exc  # set by OpenSSL's errors, not by every SSLError
        return "tls", f"TLS with the broker failed ({_tls_source(cfg)}): {why}"
    return None


def _server_says(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text


async def close_producer(producer: AIOKafkaProducer, within: float) -> None:
    """Stop a producer without letting a dead broker hold the caller hostage."""
    try:
        await asyncio.wait_for(producer.stop(), within)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.debug("kafka producer stop: %s", describe(exc))


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    if text.startswith(name):  # aiokafka's errors name themselves
        return text
    return f"{name}: {text}" if text else name
