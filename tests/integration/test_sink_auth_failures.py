"""A store refusing our credentials counts in ``pipeline_sink_auth_failures_total{sink, code}``,
once per refused request, and stays a transient error (the data waits in Kafka).

Real servers, started privately: a Prometheus with TLS and basic auth (``tests.secured_stores``)
answers remote write, Elasticsearch's client and OTLP/HTTP with 401 for a wrong password; a
gateway with API keys answers OTLP/gRPC with UNAUTHENTICATED and OTLP/HTTP with 401 for a
wrong key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from otlp.signals import Signal
from pipelines.sinks.base import Sink
from pipelines.sinks.elasticsearch import ElasticsearchSink
from pipelines.sinks.otlp_grpc import sink_from_config as grpc_sink
from pipelines.sinks.otlp_http import sink_from_config as http_sink
from pipelines.sinks.prometheus import PrometheusSink
from settings.config import (
    ElasticsearchSinkConfig,
    OtlpGrpcSinkConfig,
    OtlpHttpSinkConfig,
    PrometheusSinkConfig,
    TlsClientConfig,
)
from tests.gateway_process import GatewayProcess, running_gateway
from tests.integration.sink_checks import assert_write_is_transient
from tests.sdk_otlp import bus_record, metrics_payload, spans_payload
from tests.secured_stores import Store, secured_prometheus
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    pki = Pki(tmp_path_factory.mktemp("pki"), "auth-ca")
    with secured_prometheus(tmp_path_factory.mktemp("prometheus"), pki) as p:
        yield p


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[GatewayProcess]:
    """A gateway (embedded default) that takes only API key ``rightkey123``."""
    with running_gateway({"TG_AUTH__ENABLED": "true", "TG_AUTH__API_KEYS__rightkey123": "t1"}) as gw:
        yield gw


def _failures(sink: str, code: str) -> float:
    return REGISTRY.get_sample_value("pipeline_sink_auth_failures_total", {"sink": sink, "code": code}) or 0.0


def _wrong_password(tmp_path: Path) -> str:
    path = tmp_path / "wrong-password"
    path.write_text("wrong-" + uuid.uuid4().hex)
    return str(path)


async def test_remote_write_refused_password_counts_401(prometheus: Store, tmp_path: Path) -> None:
    sink = PrometheusSink(PrometheusSinkConfig(
        url=prometheus.url + "/api/v1/write", username=prometheus.user,
        password_file=_wrong_password(tmp_path), tls=TlsClientConfig(ca_file=str(prometheus.pki.ca_file))))
    before = _failures("prometheus", "401")
    await assert_write_is_transient(sink, [bus_record(Signal.METRICS, metrics_payload("t1"), "t1", 0)])
    assert _failures("prometheus", "401") == before + 1


async def test_elasticsearch_client_refused_password_counts_401(prometheus: Store, tmp_path: Path) -> None:
    # Any server behind basic auth answers 401 before it reads the path: the real client's
    # ApiError for it takes the sink's real path (templates at start, then the write).
    sink = ElasticsearchSink(ElasticsearchSinkConfig(
        hosts=prometheus.url, username=prometheus.user, password_file=_wrong_password(tmp_path),
        tls=TlsClientConfig(ca_file=str(prometheus.pki.ca_file))))
    before = _failures("elasticsearch", "401")
    await assert_write_is_transient(sink, [bus_record(Signal.TRACES, spans_payload("t1")[0], "t1", 0)])
    assert _failures("elasticsearch", "401") == before + 2  # the template at start, again at the write


async def test_otlp_http_refused_key_counts_401(keyed_gateway: GatewayProcess) -> None:
    sink = http_sink(OtlpHttpSinkConfig(endpoint=keyed_gateway.http_url, signals="traces",
                                        headers={"x-api-key": "wrong-key"}))
    before = _failures("otlp_http", "401")
    await assert_write_is_transient(sink, [bus_record(Signal.TRACES, spans_payload("t1")[0], "t1", 0)])
    assert _failures("otlp_http", "401") == before + 1


@pytest.mark.parametrize("name", ["otlp_grpc", "jaeger"])
async def test_otlp_grpc_refused_key_counts_unauthenticated(keyed_gateway: GatewayProcess, name: str) -> None:
    sink: Sink = grpc_sink(OtlpGrpcSinkConfig(endpoint=keyed_gateway.grpc_target, signals="traces",
                                              headers={"x-api-key": "wrong-key"}), name)
    before = _failures(name, "UNAUTHENTICATED")
    await assert_write_is_transient(sink, [bus_record(Signal.TRACES, spans_payload("t1")[0], "t1", 0)])
    assert _failures(name, "UNAUTHENTICATED") == before + 1


async def test_accepted_credentials_count_nothing(keyed_gateway: GatewayProcess) -> None:
    sink = grpc_sink(OtlpGrpcSinkConfig(endpoint=keyed_gateway.grpc_target, signals="traces",
                                        headers={"x-api-key": "rightkey123"}))
    before = _failures("otlp_grpc", "UNAUTHENTICATED")
    await sink.start()
    try:
        await sink.write([bus_record(Signal.TRACES, spans_payload("t1")[0], "t1", 0)])
    finally:
        await sink.stop()
    assert _failures("otlp_grpc", "UNAUTHENTICATED") == before
