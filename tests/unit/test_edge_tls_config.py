"""server.tls / admin.tls / auth.client_cert_tenants: what the config accepts, and the tenant a
client certificate's names select."""

from __future__ import annotations

import pytest

from gateway.receivers.tls import grpc_client_names, http_client_names
from gateway.tenancy import Authenticator, AuthError
from settings.config import AuthConfig, ConfigError, load


def test_tls_is_off_by_default() -> None:
    cfg = load(env={})
    assert not cfg.server.tls.enabled and not cfg.admin.tls.enabled
    assert cfg.server.tls.min_version == "1.2"


@pytest.mark.parametrize(("env", "message"), [
    ({"TG_SERVER__TLS__CERT_FILE": "c.pem"}, "cert_file and key_file go together"),
    ({"TG_ADMIN__TLS__KEY_FILE": "k.pem"}, "cert_file and key_file go together"),
    ({"TG_SERVER__TLS__CLIENT_CA_FILE": "ca.pem"}, "needs server.tls.cert_file"),
    ({"TG_SERVER__TLS__MIN_VERSION": "1.1"}, "is not one of"),
    ({"TG_SERVER__TLS__CERT_FILE": "c", "TG_SERVER__TLS__KEY_FILE": "k",
      "TG_SERVER__TLS__RELOAD_INTERVAL_S": "-1"}, "reload_interval_s"),
    ({"TG_AUTH__CLIENT_CERT_TENANTS": "{b.example: b}"}, "needs server.tls.client_ca_file"),
])
def test_bad_tls_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)


def test_client_cert_tenants_alone_satisfy_auth_enabled() -> None:
    cfg = load(env={"TG_AUTH__ENABLED": "true", "TG_AUTH__CLIENT_CERT_TENANTS": "{b.example: b}",
                    "TG_SERVER__TLS__CERT_FILE": "c", "TG_SERVER__TLS__KEY_FILE": "k",
                    "TG_SERVER__TLS__CLIENT_CA_FILE": "ca"})
    assert cfg.auth.client_cert_tenants == {"b.example": "b"}


def test_mapped_certificate_beats_header_and_key() -> None:
    auth = Authenticator(AuthConfig(enabled=True, api_keys={"k-a": "a"}, trust_tenant_header=True,
                                    client_cert_tenants={"b.example": "b", "spiffe://x/c": "c"}))
    assert auth.tenant_for({"x-scope-orgid": "a"}, ("b.example",)) == "b"
    assert auth.tenant_for({"authorization": "Bearer k-a"}, ("other", "spiffe://x/c")) == "c"
    # A malformed claimed header does not matter when the certificate decides.
    assert auth.tenant_for({"x-scope-orgid": "bad tenant!"}, ("b.example",)) == "b"
    # Unmapped certificate: the key rules apply as before.
    assert auth.tenant_for({"authorization": "Bearer k-a"}, ("nobody",)) == "a"
    with pytest.raises(AuthError):
        auth.tenant_for({"x-scope-orgid": "b"}, ("nobody",))
    # Names only come from a verified certificate, never from headers.
    with pytest.raises(AuthError):
        auth.tenant_for({"x-scope-orgid": "b", "b.example": "b"})


def test_bad_mapped_tenant_is_refused() -> None:
    with pytest.raises(ValueError, match="client_cert_tenants"):
        Authenticator(AuthConfig(client_cert_tenants={"x": "no spaces"}))


def test_names_of_a_client_certificate() -> None:
    peercert = {"subject": ((("organizationName", "o"),), (("commonName", "b.example"),)),
                "subjectAltName": (("DNS", "b.example"), ("URI", "spiffe://x/b"))}
    assert http_client_names(peercert) == ("b.example", "b.example", "spiffe://x/b")
    assert http_client_names(None) == ()
    ctx = {"x509_common_name": [b"b.example"], "x509_subject_alternative_name": [b"alt.example"]}
    assert grpc_client_names(ctx) == ("b.example", "alt.example")
    assert grpc_client_names({}) == ()


def test_connection_limits_default_to_rebalancing_within_minutes() -> None:
    from gateway.receivers.otlp_grpc import keepalive_options

    cfg = load(env={})
    sp = cfg.server.grpc.keepalive.server_parameters
    assert 0 < sp.max_connection_age_s <= 300 and 0 < cfg.server.http.max_connection_age_s <= 300
    options = dict(keepalive_options(cfg.server))
    assert options["grpc.max_connection_age_ms"] == 120_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert "grpc.max_connection_idle_ms" not in options  # 0: off, grpc's default
    off = load(env={"TG_SERVER__GRPC__KEEPALIVE__SERVER_PARAMETERS__MAX_CONNECTION_AGE_S": "0"})
    assert "grpc.max_connection_age_ms" not in dict(keepalive_options(off.server))
    with pytest.raises(ConfigError, match="max_requests_per_connection"):
        load(env={"TG_SERVER__HTTP__MAX_REQUESTS_PER_CONNECTION": "-1"})


def test_keepalive_durations_longer_than_grpcs_int_still_build_the_server() -> None:
    # A Collector value such as max_connection_age: 720h (2.6e9 ms) is past grpc's C int: passed
    # as is, grpc.aio.server raised OverflowError and the gateway did not start.
    import asyncio

    import grpc

    from gateway.receivers.otlp_grpc import keepalive_options

    cfg = load(env={"TG_SERVER__GRPC__KEEPALIVE__SERVER_PARAMETERS__MAX_CONNECTION_AGE": "720h",
                    "TG_SERVER__GRPC__KEEPALIVE__SERVER_PARAMETERS__TIME": "1ns",
                    "TG_SERVER__GRPC__KEEPALIVE__ENFORCEMENT_POLICY__MIN_TIME": "9000h"})
    options = dict(keepalive_options(cfg.server))
    assert options["grpc.max_connection_age_ms"] == 2**31 - 1  # the top of grpc's int range
    assert options["grpc.keepalive_time_ms"] == 1  # positive stays on, not 0 (grpc's default)
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2**31 - 1

    async def build() -> None:
        server = grpc.aio.server(options=list(options.items()))
        await server.stop(None)

    asyncio.run(build())


def test_a_bare_tls_version_reads_as_the_version() -> None:
    # TG_SERVER__TLS__MIN_VERSION=1.3 (a YAML float) was refused as "1.3 is not one of ['1.2', '1.3']".
    env = {"TG_SERVER__TLS__CERT_FILE": "c.pem", "TG_SERVER__TLS__KEY_FILE": "k.pem"}
    assert load(env={**env, "TG_SERVER__TLS__MIN_VERSION": "1.3"}).server.tls.min_version == "1.3"
    assert load(env={"TG_ADMIN__TLS__MIN_VERSION": "1.2"}).admin.tls.min_version == "1.2"
    with pytest.raises(ConfigError, match="is not one of"):
        load(env={"TG_SERVER__TLS__MIN_VERSION": "1.1"})


def test_client_ca_file_reload_is_the_collectors_key() -> None:
    # Refused as an unknown key before, though the Collector's configtls server settings take it.
    env = {"TG_SERVER__TLS__CERT_FILE": "c.pem", "TG_SERVER__TLS__KEY_FILE": "k.pem",
           "TG_SERVER__TLS__CLIENT_CA_FILE": "ca.pem"}
    from settings.config import CLIENT_CA_RELOAD_DEFAULT_S

    on = load(env={**env, "TG_SERVER__TLS__CLIENT_CA_FILE_RELOAD": "true"}).server.tls
    assert on.client_ca_file_reload and on.reload_interval_s == 0
    assert on.reload_every_s == CLIENT_CA_RELOAD_DEFAULT_S == 60.0  # polled, as no fsnotify here
    timed = load(env={**env, "TG_SERVER__TLS__CLIENT_CA_FILE_RELOAD": "true",
                      "TG_SERVER__TLS__RELOAD_INTERVAL": "5m"}).server.tls
    assert timed.reload_every_s == 300.0
    off = load(env={**env, "TG_SERVER__TLS__CLIENT_CA_FILE_RELOAD": "false",
                    "TG_SERVER__TLS__RELOAD_INTERVAL_S": "30"}).server.tls
    assert not off.client_ca_file_reload and off.reload_every_s == 30.0  # the CA still goes with the pair
    assert load(env=env).server.tls.reload_every_s == 0.0
    admin = load(env={"TG_ADMIN__TLS__CLIENT_CA_FILE_RELOAD": "true"}).admin.tls
    assert admin.client_ca_file_reload


def test_enforcement_min_time_zero_is_grpc_gos_default() -> None:
    # 0 became grpc core's min ping interval 0 (pings at any rate); the Collector (grpc-go) reads
    # EnforcementPolicy.MinTime 0 as its default of 5 minutes.
    from gateway.receivers.otlp_grpc import keepalive_options

    cfg = load(env={"TG_SERVER__GRPC__KEEPALIVE__ENFORCEMENT_POLICY__MIN_TIME": "0s"})
    assert cfg.server.grpc.keepalive.enforcement_policy.min_time_s == 0
    assert dict(keepalive_options(cfg.server))["grpc.http2.min_ping_interval_without_data_ms"] == 300_000
