"""Sink credentials and TLS: secrets read from files / variables, named (never shown) when
missing; what each sink hands its client."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.sinks import backend_auth
from pipelines.sinks.elasticsearch import ElasticsearchSink
from pipelines.sinks.otlp_grpc import sink_from_config as grpc_sink
from pipelines.sinks.prometheus import PrometheusSink
from settings.config import ElasticsearchSinkConfig, OtlpGrpcSinkConfig, PrometheusSinkConfig, TlsClientConfig


def test_secrets_come_from_files_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text("k-123\n")
    monkeypatch.setenv("SINK_TOKEN", "t-456")
    assert backend_auth.read_secret("x.api_key", file=str(tmp_path / "key")) == "k-123"
    assert backend_auth.read_secret("x.token", env="SINK_TOKEN") == "t-456"
    assert backend_auth.read_secret("x.none") is None
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    with pytest.raises(backend_auth.SecretError, match=r"x\.token_env \(\$MISSING_TOKEN\)"):
        backend_auth.read_secret("x.token", env="MISSING_TOKEN")
    with pytest.raises(backend_auth.SecretError, match=r"x\.api_key_file"):
        backend_auth.read_secret("x.api_key", file=str(tmp_path / "nope"))
    got = backend_auth.headers("s", {"a": "1"}, {"x-api-key": str(tmp_path / "key")},
                               {"authorization": "SINK_TOKEN"})
    assert got == {"a": "1", "x-api-key": "k-123", "authorization": "t-456"}


async def test_prometheus_sends_the_bearer_token_and_extra_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RW_TOKEN", "s3cr3t-xyz")
    sink = PrometheusSink(PrometheusSinkConfig(bearer_token_env="RW_TOKEN", headers={"X-Org": "o1"}))
    await sink.start()
    try:
        assert sink._headers["Authorization"] == "Bearer s3cr3t-xyz" and sink._headers["X-Org"] == "o1"
        assert "RW_TOKEN" in sink._credential and "s3cr3t-xyz" not in sink._credential
    finally:
        await sink.stop()


def test_elasticsearch_api_key_or_basic_auth_and_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "api").write_text("aWQ6a2V5")
    cfg = ElasticsearchSinkConfig(hosts="https://es:9200", api_key_file=str(tmp_path / "api"),
                                  ca_fingerprint="AB:CD")
    sink = ElasticsearchSink(cfg)
    out = sink._security(["https://es:9200"])
    assert out["api_key"] == "aWQ6a2V5" and out["ssl_assert_fingerprint"] == "abcd"
    assert "api_key_file" in sink.credential and "aWQ6a2V5" not in sink.credential
    (tmp_path / "pw").write_text("pw")
    basic = ElasticsearchSink(ElasticsearchSinkConfig(username="u", password_file=str(tmp_path / "pw")))
    assert basic._security(["http://es:9200"]) == {"basic_auth": ("u", "pw")}


def test_grpc_forwarding_uses_tls_when_asked() -> None:
    assert not backend_auth.grpc_wants_tls("h:4317", TlsClientConfig())
    assert backend_auth.grpc_wants_tls("https://h:4317", TlsClientConfig())
    assert backend_auth.grpc_wants_tls("h:4317", TlsClientConfig(ca_file="ca.pem"))
    assert backend_auth.grpc_target("https://h:4317/") == "h:4317"
    sink = grpc_sink(OtlpGrpcSinkConfig(endpoint="https://h:4317", headers={"X-Api-Key": "v"}))
    assert sink._metadata == (("x-api-key", "v"),)
