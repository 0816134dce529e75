"""SDK -> gateway -> Kafka (SASL_SSL) -> pipelines -> secured stores, with exact counts.

Every connection of the path is authenticated TLS: the pipelines write to Elasticsearch over
HTTPS with a file-realm user (x-pack security on; the integ-test distribution cannot create API
keys: its ``.security`` index mapping needs the analysis-common module it lacks), to Prometheus
over TLS with basic auth (``--web.config.file``), to Jaeger's OTLP receiver over mTLS, and forward over
OTLP/HTTP and OTLP/gRPC to a TLS backend (a second gateway, API key in a header read from a
file). Wrong credentials: the worker stays up, its log names the refused credential, the data
waits in Kafka, and after the fix and a restart everything arrives; no log holds a secret.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name
from tests.e2e.kafka_pipeline import (
    Clients,
    PipelineProcess,
    count_items,
    kafka_env,
    running_pipeline,
    unique_prefix,
)
from tests.e2e.secured_kafka import SCRAM_USER, SecuredKafka, secured_kafka
from tests.gateway_process import GatewayProcess, running_gateway
from tests.sdk_otlp import client_resource, finished_spans, metrics_data
from tests.secured_stores import Store, secured_elasticsearch, secured_jaeger, secured_prometheus
from tests.tls_certs import Pki
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0
ORDERS_PER_EXPORT = 7.0  # metrics_data: orders +5 (card) +2 (cash)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    with secured_kafka(tmp_path_factory.mktemp("kafka")) as k:
        yield k


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("stores-pki"), "stores-ca")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Store]:
    with secured_prometheus(tmp_path_factory.mktemp("prometheus"), pki) as p:
        yield p


@pytest.fixture(scope="module")
def elasticsearch(pki: Pki) -> Iterator[Store]:
    with secured_elasticsearch(pki) as es:
        yield es


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Store]:
    with secured_jaeger(tmp_path_factory.mktemp("jaeger"), pki) as j:
        yield j


def _kafka_env(k: SecuredKafka, prefix: str, password_file: Path) -> dict[str, str]:
    return kafka_env(k.sasl_ssl, prefix, TG_BUS__KAFKA__SECURITY_PROTOCOL="SASL_SSL",
                     TG_BUS__KAFKA__SASL_MECHANISM="SCRAM-SHA-512", TG_BUS__KAFKA__SASL_USERNAME=SCRAM_USER,
                     TG_BUS__KAFKA__SASL_PASSWORD_FILE=str(password_file),
                     TG_BUS__KAFKA__SSL_CA_FILE=str(k.pki.ca_file))


def _secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    return path


def _prometheus_env(p: Store, password_file: Path) -> dict[str, str]:
    return {"TG_PIPELINES__PROMETHEUS__URL": p.url + "/api/v1/write",
            "TG_PIPELINES__PROMETHEUS__TLS__CA_FILE": str(p.pki.ca_file),
            "TG_PIPELINES__PROMETHEUS__USERNAME": p.user,
            "TG_PIPELINES__PROMETHEUS__PASSWORD_FILE": str(password_file)}


def _jaeger_env(j: Store) -> dict[str, str]:
    assert j.client is not None
    return {"TG_PIPELINES__JAEGER__ENDPOINT": j.url,
            "TG_PIPELINES__JAEGER__TLS__CA_FILE": str(j.pki.ca_file),
            "TG_PIPELINES__JAEGER__TLS__CERT_FILE": str(j.client.cert),
            "TG_PIPELINES__JAEGER__TLS__KEY_FILE": str(j.client.key)}


def _es_env(es: Store, password_file: Path) -> dict[str, str]:
    return {"TG_PIPELINES__ELASTICSEARCH__HOSTS": es.url,
            "TG_PIPELINES__ELASTICSEARCH__TLS__CA_FILE": str(es.pki.ca_file),
            "TG_PIPELINES__ELASTICSEARCH__USERNAME": es.user,
            "TG_PIPELINES__ELASTICSEARCH__PASSWORD_FILE": str(password_file)}


def _es_count(es: Store, signal: Signal) -> int:
    """Documents of tenant ``default`` (0 before its data stream exists). The node is this
    module's own, so a test counts exactly what it added since its baseline."""
    body = es.get_json(f"/{index_name(signal, 'default')}/_count")
    return int(body["count"]) if body and "count" in body else 0


def _refused_then_fixed(worker: PipelineProcess, credential: str, nothing_written: Callable[[], bool],
                        fix: tuple[str, str], arrived: Callable[[], bool]) -> None:
    """A worker with a wrong password: up, its log naming ``credential``, nothing written or
    committed (the data waits in Kafka); restarted with ``fix`` (an env setting): ``arrived``."""
    worker.start()
    wait_for(lambda: "refused the credentials (401)" in worker.log(), within=TIMEOUT,
             what=f"the worker's log to name the refused credential:\n{worker.log()}")
    assert credential in worker.log()
    assert worker.proc is not None and worker.proc.poll() is None, "the worker stays up"
    acked = sum(v for (name, _), v in worker.metrics().items() if name == "pipeline_sink_acked_records_total")
    assert acked == 0 and nothing_written(), "nothing acknowledged or committed: the data waits in Kafka"
    assert worker.stop() == 0
    worker.env[fix[0]] = fix[1]
    worker.start()
    wait_for(arrived, within=TIMEOUT, what=f"the waiting data in the store after the fix:\n{worker.log()}")
    assert worker.stop() == 0


def _send(gw: GatewayProcess, service: str) -> list[str]:
    """Three traces of four spans and one metrics export over gRPC; the trace ids."""
    res = client_resource(service)
    spans, trace_ids = finished_spans(res, traces=3, children=3)
    span_exp = GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True)
    metric_exp = GrpcMetricExporter(endpoint=gw.grpc_target, insecure=True)
    try:
        assert span_exp.export(spans).name == "SUCCESS"
        assert metric_exp.export(metrics_data(res)).name == "SUCCESS"
    finally:
        span_exp.shutdown()
        metric_exp.shutdown()
    return trace_ids


def _promql(p: Store, expr: str) -> list[dict[str, Any]]:
    body = p.get_json("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return body["data"]["result"] if body and body.get("status") == "success" else []


def _orders(p: Store, service: str) -> float | None:
    got = _promql(p, f'sum(orders_total{{job="shop/{service}"}})')
    return float(got[0]["value"][1]) if got else None


def _jaeger_spans(j: Store, trace_id: str) -> int:
    try:
        with urllib.request.urlopen(f"{j.query_url}/api/traces/{trace_id}", timeout=5) as resp:
            data = json.loads(resp.read()).get("data") or []
    except OSError:
        return 0
    return len(data[0]["spans"]) if data else 0


def test_sdk_to_secured_stores_through_sasl_ssl_kafka(
        kafka: SecuredKafka, prometheus: Store, jaeger: Store, elasticsearch: Store, tmp_path: Path) -> None:
    prefix = unique_prefix("secured_sinks")
    kafka_pw = _secret(tmp_path / "kafka-pw", kafka.scram_password)
    prom_pw = _secret(tmp_path / "prom-pw", prometheus.password)
    es_pw = _secret(tmp_path / "es-pw", elasticsearch.password)
    env = {**_kafka_env(kafka, prefix, kafka_pw), **_prometheus_env(prometheus, prom_pw),
           **_jaeger_env(jaeger), **_es_env(elasticsearch, es_pw)}
    service = f"secured-{uuid.uuid4().hex[:6]}"
    es_before = {s: _es_count(elasticsearch, s) for s in (Signal.TRACES, Signal.LOGS)}
    with running_gateway(env) as gw, running_pipeline(env, "jaeger") as jp, \
            running_pipeline(env, "prometheus") as pp, running_pipeline(env, "elasticsearch") as ep:
        trace_ids = _send(gw, service)
        clients = Clients(gw)
        clients.round()  # spans and logs with ids, over both transports, for Elasticsearch
        assert clients.sent.refused_exports == 0
        spans = es_before[Signal.TRACES] + len(clients.sent.spans) + len(trace_ids) * 4
        # Each trace's root span has one event, which is also a log document (as the Collector's
        # Elasticsearch exporter writes span events).
        logs = es_before[Signal.LOGS] + len(clients.sent.logs) + len(trace_ids)
        wait_for(lambda: _es_count(elasticsearch, Signal.TRACES) == spans, within=TIMEOUT,
                 what=f"{spans} spans in the HTTPS Elasticsearch:\n{ep.log()}")
        wait_for(lambda: _es_count(elasticsearch, Signal.LOGS) == logs, within=TIMEOUT,
                 what=f"{logs} log records and span events in the HTTPS Elasticsearch")
        for trace_id in trace_ids:
            wait_for(partial(lambda t: _jaeger_spans(jaeger, t) == 4, trace_id), within=TIMEOUT,
                     what=f"trace {trace_id} whole in the mTLS Jaeger:\n{jp.log()}")
        wait_for(lambda: _orders(prometheus, service) == ORDERS_PER_EXPORT, within=TIMEOUT,
                 what=f"orders_total of {service} in the TLS + basic-auth Prometheus:\n{pp.log()}")
        assert len(_promql(prometheus, f'orders_total{{job="shop/{service}"}}')) == 2  # card, cash
        texts = [gw.log(), jp.log(), pp.log(), ep.log()]
    for text in texts:
        for secret in (prometheus.password, kafka.scram_password, elasticsearch.password):
            assert secret not in text


def test_wrong_remote_write_password_waits_then_arrives(
        kafka: SecuredKafka, prometheus: Store, tmp_path: Path) -> None:
    prefix = unique_prefix("prom_badcred")
    wrong = "wrong-" + uuid.uuid4().hex
    kafka_pw = _secret(tmp_path / "kafka-pw", kafka.scram_password)
    bad = _secret(tmp_path / "prom-bad", wrong)
    service = f"badcred-{uuid.uuid4().hex[:6]}"
    env = _kafka_env(kafka, prefix, kafka_pw)
    with running_gateway(env) as gw:
        _send(gw, service)
        gateway_log = gw.log()
    worker = PipelineProcess({**env, **_prometheus_env(prometheus, bad)}, "prometheus")
    expected = (f"pipelines.prometheus.username '{prometheus.user}' and the password from "
                f"pipelines.prometheus.password_file ({bad})")
    try:
        _refused_then_fixed(worker, expected, lambda: _orders(prometheus, service) is None,
                            ("TG_PIPELINES__PROMETHEUS__PASSWORD_FILE",
                             str(_secret(tmp_path / "prom-pw", prometheus.password))),
                            lambda: _orders(prometheus, service) == ORDERS_PER_EXPORT)
        logs = [gateway_log, worker.log()]
    finally:
        worker.cleanup()
    for text in logs:
        for secret in (wrong, prometheus.password, kafka.scram_password):
            assert secret not in text


@pytest.mark.parametrize("sink", ["otlp_http", "otlp_grpc"])
def test_forwarding_sinks_reach_a_tls_backend_with_a_secret_header(
        kafka: SecuredKafka, pki: Pki, tmp_path: Path, sink: str) -> None:
    prefix = unique_prefix(f"fwd_{sink}")
    server = pki.server()
    api_key = uuid.uuid4().hex
    backend_env = {"TG_SERVER__TLS__CERT_FILE": str(server.cert), "TG_SERVER__TLS__KEY_FILE": str(server.key),
                   "TG_AUTH__ENABLED": "true", f"TG_AUTH__API_KEYS__{api_key}": "forwarded"}
    section = f"TG_PIPELINES__{sink.upper()}__"
    env = _kafka_env(kafka, prefix, _secret(tmp_path / "kafka-pw", kafka.scram_password))
    with running_gateway(backend_env) as backend:
        endpoint = (f"https://127.0.0.1:{backend.http_port}" if sink == "otlp_http"
                    else f"https://127.0.0.1:{backend.grpc_port}")
        env.update({section + "ENDPOINT": endpoint, section + "TLS__CA_FILE": str(pki.ca_file),
                    section + "HEADERS_FROM_FILE": json.dumps({"x-api-key": str(_secret(tmp_path / "key",
                                                                                      api_key))})})
        with running_gateway(env) as gw, running_pipeline(env, sink) as worker:
            clients = Clients(gw)
            clients.round()
            assert clients.sent.refused_exports == 0
            want = {"traces": len(clients.sent.spans), "logs": len(clients.sent.logs),
                    "metrics": len(clients.sent.points)}

            def at_backend() -> dict[str, int]:
                got = count_items({s: backend.read_sink("forwarded", s) for s in want})
                return {s: sum(c.values()) for s, c in got.items()}

            wait_for(lambda: at_backend() == want, within=TIMEOUT,
                     what=f"{want} at the TLS backend (got {at_backend()}):\n{worker.log()}")
            logs = [gw.log(), worker.log()]
    for text in logs:
        assert api_key not in text


def test_wrong_elasticsearch_password_waits_then_arrives(
        kafka: SecuredKafka, elasticsearch: Store, tmp_path: Path) -> None:
    prefix = unique_prefix("es_badcred")
    wrong = "wrong-" + uuid.uuid4().hex
    env = _kafka_env(kafka, prefix, _secret(tmp_path / "kafka-pw", kafka.scram_password))
    before = _es_count(elasticsearch, Signal.TRACES)
    with running_gateway(env) as gw:
        clients = Clients(gw)
        clients.round()
        assert clients.sent.refused_exports == 0
        gateway_log = gw.log()
    bad = _secret(tmp_path / "es-bad", wrong)
    worker = PipelineProcess({**env, **_es_env(elasticsearch, bad)}, "elasticsearch")
    expected = (f"pipelines.elasticsearch.username '{elasticsearch.user}' and the password from "
                f"pipelines.elasticsearch.password_file ({bad})")
    spans = before + len(clients.sent.spans)
    try:
        _refused_then_fixed(worker, expected, lambda: _es_count(elasticsearch, Signal.TRACES) == before,
                            ("TG_PIPELINES__ELASTICSEARCH__PASSWORD_FILE",
                             str(_secret(tmp_path / "es-pw", elasticsearch.password))),
                            lambda: _es_count(elasticsearch, Signal.TRACES) == spans)
        logs = [gateway_log, worker.log()]
    finally:
        worker.cleanup()
    for text in logs:
        for secret in (wrong, elasticsearch.password, kafka.scram_password):
            assert secret not in text
