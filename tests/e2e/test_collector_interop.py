"""Our Kafka topics and the OpenTelemetry Collector's Kafka components speak the same OTLP.

Both directions, with the Collector-based jaeger binary that stack/ builds and the configs in
deploy/collector/:
1. spans the gateway wrote are read by the Collector's Kafka receiver (encoding otlp_proto)
   into Jaeger's store and come back from Jaeger's query API, tenant and correlation id included;
2. spans, logs and metrics the Collector's Kafka exporter wrote (SDK -> Collector OTLP receiver)
   are consumed by ``telemetry-gateway pipelines --sink file``.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.subprocs import spawn, terminate
from tests import stackenv
from tests.e2e.kafka_pipeline import Clients, kafka_env, received, running_pipeline, unique_prefix
from tests.gateway_process import REPO_ROOT, free_port, running_gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

CONFIGS = REPO_ROOT / "deploy" / "collector"


@contextmanager
def running_collector(config: str, env: Mapping[str, str], listens_on: str) -> Iterator[Path]:
    """Run the jaeger binary with a deploy/collector config; yield its log path; SIGTERM at the end."""
    binary = stackenv.require_binary(stackenv.JAEGER_BIN)
    with tempfile.TemporaryDirectory(prefix="tg-collector-") as tmp:
        log_path = Path(tmp) / "collector.log"
        full_env = {**os.environ, "TG_COLLECTOR_HEALTH": f"127.0.0.1:{free_port()}", **env}
        proc = spawn([str(binary), f"--config=file:{CONFIGS / config}"], log_path, env=full_env)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"collector exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            return stackenv._listening(listens_on)

        try:
            wait_for(up, within=60, what=f"collector ({config}) listening on {listens_on}")
            yield log_path
        finally:
            terminate(proc, 20, group=True)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_collector_kafka_receiver_reads_our_span_topic_into_jaeger() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("interop_in")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix)
    query = f"127.0.0.1:{free_port()}"
    collector_env = {
        "TG_COLLECTOR_KAFKA_BROKERS": stackenv.KAFKA_BOOTSTRAP,
        "TG_COLLECTOR_TOPIC_PREFIX": prefix,
        "TG_COLLECTOR_GROUP_ID": prefix + "collector",
        "TG_COLLECTOR_QUERY_HTTP": query,
        "TG_COLLECTOR_QUERY_GRPC": f"127.0.0.1:{free_port()}",
    }
    with running_gateway(env) as gw:
        clients = Clients(gw)
        assert clients.spans("grpc", 15) and clients.spans("http", 15)
        with running_collector("kafka-to-jaeger.yaml", collector_env, query):
            url = f"http://{query}/api/traces?service=kafka-e2e&limit=1000"

            def spans_in_jaeger() -> list[dict[str, Any]]:
                traces = _get_json(url).get("data") or []
                return [dict(span, process=t["processes"][span["processID"]])
                        for t in traces for span in t["spans"]]

            wait_for(lambda: len(spans_in_jaeger()) >= len(clients.sent.spans), within=60,
                     what="every span in Jaeger via the Collector's Kafka receiver")
            spans = spans_in_jaeger()
    assert {s["operationName"] for s in spans} == set(clients.sent.spans)
    for span in spans:
        tags = {t["key"]: t["value"] for t in span["process"]["tags"]}
        assert tags.get("tenant.id") == "default"
        assert tags.get("correlation.id") == clients.sent.spans[span["operationName"]]


def test_our_pipelines_consume_what_the_collector_kafka_exporter_wrote() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("interop_out")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix)
    otlp_grpc, otlp_http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    collector_env = {
        "TG_COLLECTOR_KAFKA_BROKERS": stackenv.KAFKA_BOOTSTRAP,
        "TG_COLLECTOR_TOPIC_PREFIX": prefix,
        "TG_COLLECTOR_OTLP_GRPC": otlp_grpc,
        "TG_COLLECTOR_OTLP_HTTP": otlp_http,
        "TG_COLLECTOR_METRICS_PORT": str(free_port()),
    }
    with running_pipeline(env) as pipeline, \
            running_collector("otlp-to-kafka.yaml", collector_env, otlp_grpc):
        clients = Clients(_CollectorTarget(otlp_grpc, otlp_http))  # type: ignore[arg-type]
        for transport in ("grpc", "http"):
            assert clients.spans(transport) and clients.logs(transport) and clients.metrics(transport)

        def missing_ids() -> int:
            got = received(pipeline)
            n = 0
            for signal_name, sent in (("traces", clients.sent.spans), ("logs", clients.sent.logs),
                                      ("metrics", clients.sent.points)):
                have = {item for item, _tenant, _cid in got[signal_name]}
                n += len(set(sent) - have)
            return n

        wait_for(lambda: missing_ids() == 0, within=60,
                 what="every item the Collector's Kafka exporter wrote, at our file sink")


class _CollectorTarget:
    """The two addresses ``Clients`` needs, for a Collector instead of a gateway."""

    def __init__(self, grpc_target: str, http_hostport: str) -> None:
        self.grpc_target = grpc_target
        self.http_url = f"http://{http_hostport}"
