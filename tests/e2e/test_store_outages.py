"""Each store stopped for a bounded minute while data flows: the pipeline pauses, nothing is lost.

Elasticsearch, Jaeger and Prometheus are the stack's own processes (``stack/``): the test stops
the real one with the stack's process control (SIGTERM to its process group) and starts it
again the way ``stack/up`` does, always, even when the test fails, and waits until it is
healthy. While the store is down the OpenTelemetry SDK keeps exporting through the gateway
into Kafka at a steady pace; the pipelines worker for that store keeps retrying, its consumer
lag grows, it neither exits nor dead-letters anything. Once the store is back every
acknowledged item is in it exactly once: Elasticsearch by document count and item ids,
Prometheus by sample count, Jaeger by reading every trace back whole.

Jaeger keeps traces in memory, so its restart forgets what it held: that test sends only once
Jaeger is down and reads back everything sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from unittest.mock import patch

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from elasticsearch import Elasticsearch
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stackctl import procs
from stackctl.elasticsearch import Elasticsearch as EsService
from stackctl.jaeger import Jaeger as JaegerService
from stackctl.prometheus import Prometheus as PrometheusService
from stackctl.service import Service
from stackctl.settings import Settings

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name
from tests import stackenv
from tests.e2e.kafka_pipeline import PipelineProcess, kafka_env, unique_prefix
from tests.gateway_process import REPO_ROOT, GatewayProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

STORE_OUTAGE_S = 60.0
"""How long each store stays down while data flows (the deliberate wait of each test)."""
SEND_EVERY_S = 1.0
ITEMS_PER_EXPORT = 5
RECOVERY_S = 180.0  # a store's JVM start plus the backlog written


@dataclass
class Sent:
    span_names: set[str] = field(default_factory=set)
    log_bodies: set[str] = field(default_factory=set)
    points: set[str] = field(default_factory=set)
    traces: dict[str, int] = field(default_factory=dict)  # trace id -> spans
    refused: int = 0


class Sender:
    """SDK exports of one tenant (API key) at a steady pace, alternating gRPC and HTTP, in a thread."""

    def __init__(self, gw: GatewayProcess, key: str, signals: set[Signal]) -> None:
        self._gw = gw
        self._headers = {"x-api-key": key}
        self._signals = signals
        self.sent = Sent()
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="store-outage-sender")
        self.error: BaseException | None = None
        self._resource = Resource.create({"service.name": f"store-outage-{uuid.uuid4().hex[:6]}"})

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self) -> Sent:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "sender did not stop"
        if self.error is not None:
            raise self.error
        return self.sent

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                self.once()
                self._stop.wait(max(0.0, SEND_EVERY_S - (time.monotonic() - began)))
        except BaseException as exc:
            self.error = exc

    def once(self) -> None:
        self._n += 1
        grpc = self._n % 2 == 0
        gw, h = self._gw, self._headers
        if Signal.TRACES in self._signals:
            memory = InMemorySpanExporter()
            provider = TracerProvider(resource=self._resource)
            provider.add_span_processor(SimpleSpanProcessor(memory))
            tracer = provider.get_tracer("store-outage")
            names = [f"span-{self._n}-{i}" for i in range(ITEMS_PER_EXPORT)]
            with tracer.start_as_current_span(names[0]):
                for name in names[1:]:
                    with tracer.start_as_current_span(name):
                        pass
            spans = memory.get_finished_spans()
            exp: Any = (GrpcSpanExporter(endpoint=gw.grpc_target, insecure=True, headers=h) if grpc
                        else HttpSpanExporter(endpoint=gw.http_url + "/v1/traces", headers=h))
            if self._export(exp, spans):
                self.sent.span_names.update(names)
                self.sent.traces[format(spans[0].context.trace_id, "032x")] = len(spans)
        if Signal.LOGS in self._signals:
            memory_logs = InMemoryLogRecordExporter()
            lp = LoggerProvider(resource=self._resource)
            lp.add_log_record_processor(SimpleLogRecordProcessor(memory_logs))
            logger = lp.get_logger("store-outage")
            bodies = [f"log-{self._n}-{i}" for i in range(ITEMS_PER_EXPORT)]
            for body in bodies:
                logger.emit(body=body, severity_text="INFO")
            exp = (GrpcLogExporter(endpoint=gw.grpc_target, insecure=True, headers=h) if grpc
                   else HttpLogExporter(endpoint=gw.http_url + "/v1/logs", headers=h))
            if self._export(exp, memory_logs.get_finished_logs()):
                self.sent.log_bodies.update(bodies)
        if Signal.METRICS in self._signals:
            reader = InMemoryMetricReader()
            mp = MeterProvider(resource=self._resource, metric_readers=[reader])
            counter = mp.get_meter("store-outage").create_counter("store.outage.requests")
            ids = [f"point-{self._n}-{i}" for i in range(ITEMS_PER_EXPORT)]
            for item in ids:
                counter.add(1, {"item.id": item})
            data = reader.get_metrics_data()
            mp.shutdown()
            exp = (GrpcMetricExporter(endpoint=gw.grpc_target, insecure=True, headers=h) if grpc
                   else HttpMetricExporter(endpoint=gw.http_url + "/v1/metrics", headers=h))
            if self._export(exp, data):
                self.sent.points.update(ids)

    def _export(self, exporter: Any, data: Any) -> bool:
        try:
            ok: bool = exporter.export(data).name == "SUCCESS"
        finally:
            exporter.shutdown()
        if not ok:
            self.sent.refused += 1
        return ok


# -- the stack's store processes -----------------------------------------------------------------

def stack_env() -> dict[str, str]:
    """The ``TG_STACK_*`` settings as ``stack/up`` sees them (``stack/ports.env`` over this environment)."""
    out = subprocess.run(["bash", "-c", 'set -a; . "$0"; env -0', str(REPO_ROOT / "stack" / "ports.env")],
                         capture_output=True, check=True, timeout=30).stdout.decode()
    pairs = (line.split("=", 1) for line in out.split("\0") if "=" in line)
    return {k: v for k, v in pairs if k.startswith("TG_STACK_")}


def _service(name: str) -> Service:
    settings = Settings.from_env()
    made: dict[str, Callable[[Settings], Service]] = {
        "elasticsearch": EsService, "jaeger": JaegerService, "prometheus": PrometheusService}
    return made[name](settings)


@contextmanager
def store_down(name: str) -> Iterator[Callable[[], None]]:
    """Stop the stack's ``name`` process; yields ``start``, which the block may call to bring it
    back early. On leaving, the store is started (if it is not yet) and healthy, whatever happened."""
    with patch.dict(os.environ, stack_env()), _stopped(name) as start:
        yield start


@contextmanager
def _stopped(name: str) -> Iterator[Callable[[], None]]:
    svc = _service(name)
    units = svc.units()
    assert all(procs.running_pid(u) for u in units), f"{name} is not running; run `bash stack/up`"
    procs.stop(units, svc.stop_grace())
    started = False

    def start() -> None:
        nonlocal started
        if started:
            return
        started = True
        svc.prepare()
        for unit in units:
            procs.spawn(unit)
        wait_for(lambda: svc.health().ok, within=RECOVERY_S, interval=0.5, what=f"{name} healthy again")

    try:
        yield start
    finally:
        start()


# -- the path -----------------------------------------------------------------------------------

@dataclass
class Path_:
    gw: GatewayProcess
    pipeline: PipelineProcess
    tenant: str
    key: str
    prefix: str

    @property
    def group(self) -> str:
        return f"{self.prefix}group-{self.pipeline.sink}"

    def lag(self) -> int:
        """Records in the topics beyond the worker's committed offsets (what it has not finished)."""
        return asyncio.run(_group_lag(self.group, [s.topic(self.prefix) for s in Signal]))


async def _group_lag(group: str, topics: list[str]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        if not parts:
            for t in topics:
                await consumer._client._wait_on_metadata(t)
            parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(parts)
        done = {tp: max(0, meta.offset) for tp, meta in committed.items()}
        return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


@contextmanager
def running_path(sink: str) -> Iterator[Path_]:
    run = uuid.uuid4().hex[:8]
    tenant, key = f"store-outage-{sink}-{run}", f"sokey{run}"
    prefix = unique_prefix(f"store_{sink}")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix,
                    TG_AUTH__ENABLED="true", **{f"TG_AUTH__API_KEYS__{key}": tenant},
                    TG_PIPELINES__ELASTICSEARCH__HOSTS=stackenv.ES_URL,
                    TG_PIPELINES__JAEGER__ENDPOINT=stackenv.JAEGER_OTLP_GRPC,
                    TG_PIPELINES__PROMETHEUS__URL=stackenv.PROMETHEUS_URL + "/api/v1/write")
    gw = GatewayProcess(env)
    pipeline = PipelineProcess(env, sink)
    try:
        gw.start()
        pipeline.start()
        yield Path_(gw, pipeline, tenant, key, prefix)
        assert pipeline.stop() == 0, pipeline.log()
        assert gw.stop() == 0, gw.log()
    finally:
        pipeline.cleanup()
        gw.cleanup()


def _metric(p: PipelineProcess, name: str) -> float:
    return sum(v for (n, _), v in p.metrics().items() if n == name)


def ride_out_outage(path: Path_, store: str, sender: Sender) -> dict[str, float]:
    """Keep sending while ``store`` is down for STORE_OUTAGE_S; check the pipeline paused and held
    everything; bring the store back; stop sending. Returns what was seen during the outage."""
    p = path.pipeline
    with store_down(store) as start:
        down_at = time.monotonic()
        acked_before = _metric(p, "pipeline_sink_acked_records_total")
        first = wait_for(path.lag, within=STORE_OUTAGE_S, interval=1.0,
                         what=f"consumer group lag while {store} is down")
        time.sleep(max(0.0, STORE_OUTAGE_S - (time.monotonic() - down_at)))  # the deliberate outage
        lag = path.lag()
        assert lag > first, f"lag did not grow while {store} was down ({first} -> {lag})"
        acked_during = _metric(p, "pipeline_sink_acked_records_total") - acked_before
        assert p.proc is not None and p.proc.poll() is None, f"pipelines worker exited:\n{p.log()}"
        assert _metric(p, "pipeline_dead_letter_records_total") == 0, "dead letters while the store was down"
        start()
    sender.stop()
    return {"lag_first_seen": first, "lag_at_end_of_outage": lag, "acked_during_outage": acked_during,
            "transient_errors": _metric(p, "pipeline_sink_errors_total")}


def finish(path: Path_) -> None:
    p = path.pipeline
    wait_for(lambda: path.lag() == 0, within=RECOVERY_S, interval=1.0, what="the pipelines worker caught up")
    assert _metric(p, "pipeline_dead_letter_records_total") == 0


def test_elasticsearch_down_a_minute_loses_nothing() -> None:
    stackenv.require("kafka", "elasticsearch")
    with running_path("elasticsearch") as path:
        sender = Sender(path.gw, path.key, {Signal.TRACES, Signal.LOGS}).start()
        wait_for(lambda: len(sender.sent.span_names) >= 3 * ITEMS_PER_EXPORT, within=60,
                 what="exports acknowledged before the outage")
        seen = ride_out_outage(path, "elasticsearch", sender)
        sent = sender.sent
        assert sent.refused == 0, "the gateway refused an export (Kafka was up)"
        assert seen["lag_at_end_of_outage"] > 0
        es = Elasticsearch(stackenv.ES_URL)
        try:
            for signal, want, field_ in ((Signal.TRACES, sent.span_names, "name"),
                                         (Signal.LOGS, sent.log_bodies, "body.text")):
                index = index_name(signal, path.tenant)
                wait_for(partial(_es_holds, es, index, len(want)), within=RECOVERY_S, interval=1.0,
                         what=f"{len(want)} documents in {index}")
                finish(path)
                assert _es_count(es, index) == len(want), f"{index}: duplicates"
                assert _es_values(es, index, field_) == want, f"{index}: ids differ"
        finally:
            es.close()
        print(f"\nelasticsearch outage: {json.dumps(seen)}; spans {len(sent.span_names)}, "
              f"logs {len(sent.log_bodies)}")


def _es_count(es: Elasticsearch, index: str) -> int:
    if not es.indices.exists(index=index):
        return 0
    es.indices.refresh(index=index)
    return int(es.count(index=index).body["count"])


def _es_holds(es: Elasticsearch, index: str, n: int) -> bool:
    return _es_count(es, index) >= n


def _es_values(es: Elasticsearch, index: str, field_: str) -> set[str]:
    out: set[str] = set()
    resp = es.search(index=index, size=10_000, source_includes=[field_])
    for hit in resp.body["hits"]["hits"]:
        node: Any = hit["_source"]
        for part in field_.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        out.add(str(node))
    return out


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_jaeger_down_a_minute_loses_nothing() -> None:
    stackenv.require("kafka", "jaeger", "jaeger-query")
    with running_path("jaeger") as path:
        sender = Sender(path.gw, path.key, {Signal.TRACES})
        p = path.pipeline
        with store_down("jaeger") as start:
            down_at = time.monotonic()
            sender.start()
            first = wait_for(path.lag, within=STORE_OUTAGE_S, interval=1.0,
                             what="consumer group lag while jaeger is down")
            time.sleep(max(0.0, STORE_OUTAGE_S - (time.monotonic() - down_at)))  # the deliberate outage
            lag = path.lag()
            assert lag > first, f"lag did not grow while jaeger was down ({first} -> {lag})"
            assert p.proc is not None and p.proc.poll() is None, f"pipelines worker exited:\n{p.log()}"
            assert _metric(p, "pipeline_dead_letter_records_total") == 0
            start()
        sent = sender.stop()
        assert sent.refused == 0 and sent.traces
        finish(path)

        for trace_id, spans in sent.traces.items():
            wait_for(partial(_jaeger_whole, trace_id, spans), within=RECOVERY_S, interval=0.5,
                     what=f"trace {trace_id} whole in Jaeger")
        print(f"\njaeger outage: lag {lag}, traces {len(sent.traces)} read back whole")


def _jaeger_whole(trace_id: str, spans: int) -> bool:
    body = _get_json(f"{stackenv.JAEGER_QUERY_URL}/api/traces/{trace_id}")
    data = (body or {}).get("data") or []
    return bool(data) and len(data[0]["spans"]) == spans


def _promql(expr: str) -> float | None:
    body = _get_json(f"{stackenv.PROMETHEUS_URL}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    result = body["data"]["result"] if body and body.get("status") == "success" else []
    return float(result[0]["value"][1]) if result else None


def test_prometheus_down_a_minute_loses_nothing() -> None:
    stackenv.require("kafka", "prometheus")
    with running_path("prometheus") as path:
        sender = Sender(path.gw, path.key, {Signal.METRICS}).start()
        wait_for(lambda: len(sender.sent.points) >= 3 * ITEMS_PER_EXPORT, within=60,
                 what="exports acknowledged before the outage")
        seen = ride_out_outage(path, "prometheus", sender)
        sent = sender.sent
        assert sent.refused == 0
        assert seen["lag_at_end_of_outage"] > 0
        finish(path)
        # One sample per item id (each export records its own ids once): samples == points sent.
        expr = (f'sum(count_over_time(store_outage_requests_total{{tenant="{path.tenant}"}}[30m]))')
        series = f'count(count_over_time(store_outage_requests_total{{tenant="{path.tenant}"}}[30m]))'
        wait_for(lambda: (_promql(expr) or 0) >= len(sent.points), within=RECOVERY_S, interval=1.0,
                 what=f"{len(sent.points)} samples in Prometheus")
        assert _promql(expr) == len(sent.points), "sample count differs"
        assert _promql(series) == len(sent.points), "series count differs"
        print(f"\nprometheus outage: {json.dumps(seen)}; samples {len(sent.points)}")
