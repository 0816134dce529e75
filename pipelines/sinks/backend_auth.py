"""TLS, credentials and secret headers for the sinks' connections to their stores.

Every secret (a password, an API key, a bearer token, a header's value) comes from a file or
an environment variable that the configuration names, is read when the sink starts, and is
only ever handed to the client library: messages name the setting it came from, never its
value (``SecretError`` included). ``refused`` words an answer of 401 / 403 so that the pipeline's
log says which credential the store refused.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from settings.config import TlsClientConfig

if TYPE_CHECKING:
    import grpc


class SecretError(RuntimeError):
    """A configured secret or TLS file cannot be read; the sink cannot start until it is fixed."""


def read_secret(setting: str, *, file: str = "", env: str = "") -> str | None:
    """The secret named by ``<setting>_file`` / ``<setting>_env`` (trailing newline dropped);
    None when neither is configured."""
    if file:
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"{setting}_file ({file}): cannot read: {exc.strerror or type(exc).__name__}") \
                from None
    if env:
        value = os.environ.get(env)
        if value is None:
            raise SecretError(f"{setting}_env (${env}): not set in the environment")
        return value
    return None


def source(setting: str, *, file: str = "", env: str = "") -> str:
    """Where a secret comes from, in words for a message: the setting, never the value."""
    if file:
        return f"{setting}_file ({file})"
    return f"{setting}_env (${env})" if env else "(none configured)"


def headers(setting: str, plain: Mapping[str, str], from_file: Mapping[str, str],
            from_env: Mapping[str, str]) -> dict[str, str]:
    """``plain`` plus the secret headers read from their files and variables."""
    out = dict(plain)
    for name, path in from_file.items():
        out[name] = read_secret(f"{setting}.headers_from_file.{name}", file=path) or ""
    for name, var in from_env.items():
        out[name] = read_secret(f"{setting}.headers_from_env.{name}", env=var) or ""
    return out


class _WithHeaders(Protocol):
    headers: dict[str, str]
    headers_from_file: dict[str, str]
    headers_from_env: dict[str, str]


def configured_headers(setting: str, c: _WithHeaders) -> dict[str, str]:
    """``headers`` for a sink section that has ``headers`` / ``headers_from_file`` / ``_env``."""
    return headers(setting, c.headers, c.headers_from_file, c.headers_from_env)


def ssl_context(tls: TlsClientConfig, setting: str) -> ssl.SSLContext:
    """A client context verifying the store against ``tls.ca_file`` (else the system's CAs),
    presenting ``tls.cert_file`` when set."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise SecretError(f"{setting}.tls: cannot load {tls.ca_file or tls.cert_file}: {exc}") from None
    return ctx


def grpc_wants_tls(endpoint: str, tls: TlsClientConfig) -> bool:
    return endpoint.startswith("https://") or bool(tls.ca_file or tls.cert_file)


def grpc_target(endpoint: str) -> str:
    """``host:port`` of an endpoint given with or without ``http(s)://``."""
    for scheme in ("https://", "http://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):].rstrip("/")
    return endpoint


def grpc_credentials(tls: TlsClientConfig, setting: str) -> grpc.ChannelCredentials:
    import grpc

    def read(path: str, what: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise SecretError(f"{setting}.tls.{what} ({path}): cannot read: {exc.strerror}") from None

    return grpc.ssl_channel_credentials(root_certificates=read(tls.ca_file, "ca_file"),
                                        private_key=read(tls.key_file, "key_file"),
                                        certificate_chain=read(tls.cert_file, "cert_file"))


def refused(store: str, status: int | str, credential: str) -> str:
    """The message for a store refusing our credentials (401/403, UNAUTHENTICATED)."""
    return f"{store} refused the credentials ({status}): check {credential}"
