"""Helpers for the Kafka end-to-end tests: a pipelines worker subprocess, SDK clients, sink reads.

Clients are the OpenTelemetry SDK's own OTLP exporters. Each item carries a unique id (span
name, log body, data point attribute ``item.id``) so the file-sink output can be checked for
loss (every acknowledged id present) and duplicates (an id seen twice, from redelivery) exactly.
Every export call carries its own ``x-correlation-id``, so the test can check that each item
arrived with the correlation id of the request that brought it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from prometheus_client.parser import text_string_to_metric_families

from bench.subprocs import kill_group, spawn, terminate
from otlp.json_mapping import proto_to_json
from otlp.signals import Signal
from pipelines.sinks.file import complete_lines
from tests.gateway_process import REPO_ROOT, GatewayProcess, free_port
from tests.integration.kafka_read import read_topic
from tests.waiting import wait_for

RESOURCE = Resource.create({"service.name": "kafka-e2e"})


def unique_prefix(name: str) -> str:
    """Topic prefix / group prefix of one test run, so parallel and repeated runs never meet."""
    return f"e2e_{name}_{uuid.uuid4().hex[:8]}_"


def kafka_env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    """``TG_*`` overrides that put a gateway or pipelines worker on ``bootstrap`` with ``prefix``."""
    env = {
        "TG_BUS__KIND": "kafka",
        "TG_BUS__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TG_BUS__KAFKA__TOPIC_PREFIX": prefix,
        "TG_BUS__KAFKA__PARTITIONS": "3",
        "TG_PIPELINES__GROUP_PREFIX": prefix + "group-",
        "TG_PIPELINES__DEAD_LETTER_TOPIC": prefix + "dead_letter",
        "TG_ACK": "durable",
    }
    env.update(extra)
    return env


# -- pipelines worker -------------------------------------------------------------------------

class PipelineProcess:
    """``telemetry-gateway pipelines --sink NAME`` as a subprocess with its own data dir and port."""

    def __init__(self, env: Mapping[str, str], sink: str = "file", workdir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tg-pipe-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.data_dir = self.workdir / "data"
        self.admin_port = free_port()
        self.sink = sink
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TG_") or k.startswith("TG_STACK")}
        self.env.update({"TG_PIPELINES__FILE__DATA_DIR": str(self.data_dir),
                         "TG_PIPELINES__ADMIN_HOST": "127.0.0.1",
                         "TG_PIPELINES__ADMIN_PORT": str(self.admin_port),
                         "PYTHONUNBUFFERED": "1"})
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"pipelines-{self.starts}.log"

    def start(self, *, joined: bool = True) -> PipelineProcess:
        """Spawn; wait until it joined its consumer group unless ``joined`` is False."""
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([sys.executable, "-m", "gateway.cli", "pipelines", "--sink", self.sink],
                          self.log_path, env=self.env, cwd=REPO_ROOT)
        if not joined:
            return self
        wait_for(lambda: self._alive() and "consumer group" in self.log_path.read_text(errors="replace"),
                 within=60, what=f"pipelines worker to join its consumer group (log {self.log_path})")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pipelines worker exited {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("*.log")))

    def kill(self) -> None:
        """SIGKILL: no chance to commit or flush anything (the crash case)."""
        if self.proc is not None:
            kill_group(self.proc)

    def stop(self, within: float = 20.0) -> int:
        assert self.proc is not None
        if terminate(self.proc, within) is None:
            raise AssertionError(f"pipelines worker ignored SIGTERM for {within}s:\n{self.log()}")
        return self.proc.returncode

    def cleanup(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The worker's /metrics as {(sample name, labels): value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def read(self, signal_name: str) -> list[dict[str, Any]]:
        """Every line the file sink wrote for ``signal_name`` (all tenants, all files)."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.data_dir.glob(f"*/{signal_name}*.jsonl")):
            out.extend(json.loads(line) for line in complete_lines(path))
        return out


@contextmanager
def running_pipeline(env: Mapping[str, str], sink: str = "file") -> Iterator[PipelineProcess]:
    p = PipelineProcess(env, sink)
    try:
        yield p.start()
        rc = p.stop()
        assert rc == 0, f"pipelines worker exited {rc} after SIGTERM:\n{p.log()}"
    finally:
        p.cleanup()


# -- SDK clients ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Export:
    """One export call: when it ran (``time.monotonic``) and whether the SDK reported success.

    Fault tests place exports against the moments a fault began and ended, to show what the
    gateway acknowledged while it lasted.
    """

    started: float
    ended: float
    ok: bool


@dataclass
class Sent:
    """What the gateway acknowledged: item id -> correlation id of the request that carried it."""

    spans: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    points: dict[str, str] = field(default_factory=dict)
    refused_exports: int = 0
    exports: list[Export] = field(default_factory=list)


class Clients:
    """SDK exporters (gRPC or HTTP/protobuf) aimed at one gateway; one export = one request."""

    def __init__(self, gw: GatewayProcess, timeout_s: float = 10.0) -> None:
        self._gw = gw
        self._timeout = timeout_s
        self.sent = Sent()
        self._n = 0

    def aim_at(self, gw: GatewayProcess) -> None:
        """Send to another gateway (a restarted one) from now on; ids keep counting, ``sent`` grows."""
        self._gw = gw

    def _cid(self) -> str:
        return str(uuid.uuid4())

    def _ids(self, kind: str, count: int) -> list[str]:
        self._n += 1
        return [f"{kind}-{self._n}-{i}" for i in range(count)]

    def spans(self, transport: str, count: int = 20) -> bool:
        cid = self._cid()
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("kafka-e2e")
        ids = self._ids("span", count)
        for name in ids:
            with tracer.start_as_current_span(name):
                pass
        headers = {"x-correlation-id": cid}
        exporter = (GrpcSpanExporter(endpoint=self._gw.grpc_target, insecure=True, headers=headers,
                                     timeout=self._timeout)
                    if transport == "grpc" else
                    HttpSpanExporter(endpoint=self._gw.http_url + "/v1/traces", headers=headers,
                                     timeout=self._timeout))
        ok = self._export(exporter, memory.get_finished_spans())
        return self._record(ok, self.sent.spans, ids, cid)

    def logs(self, transport: str, count: int = 20) -> bool:
        cid = self._cid()
        memory = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=RESOURCE)
        provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
        logger = provider.get_logger("kafka-e2e")
        ids = self._ids("log", count)
        for body in ids:
            logger.emit(body=body, severity_text="INFO")
        headers = {"x-correlation-id": cid}
        exporter = (GrpcLogExporter(endpoint=self._gw.grpc_target, insecure=True, headers=headers,
                                    timeout=self._timeout)
                    if transport == "grpc" else
                    HttpLogExporter(endpoint=self._gw.http_url + "/v1/logs", headers=headers,
                                    timeout=self._timeout))
        ok = self._export(exporter, memory.get_finished_logs())
        return self._record(ok, self.sent.logs, ids, cid)

    def metrics(self, transport: str, count: int = 10) -> bool:
        cid = self._cid()
        reader = InMemoryMetricReader()
        provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
        counter = provider.get_meter("kafka-e2e").create_counter("e2e.requests")
        ids = self._ids("point", count)
        for item in ids:
            counter.add(1, {"item.id": item})
        data = reader.get_metrics_data()
        assert data is not None
        headers = {"x-correlation-id": cid}
        exporter = (GrpcMetricExporter(endpoint=self._gw.grpc_target, insecure=True, headers=headers,
                                       timeout=self._timeout)
                    if transport == "grpc" else
                    HttpMetricExporter(endpoint=self._gw.http_url + "/v1/metrics", headers=headers,
                                       timeout=self._timeout))
        ok = self._export(exporter, data)
        provider.shutdown()
        return self._record(ok, self.sent.points, ids, cid)

    def _export(self, exporter: Any, data: Any) -> bool:
        started = time.monotonic()
        ok: bool = exporter.export(data).name == "SUCCESS"
        self.sent.exports.append(Export(started, time.monotonic(), ok))
        exporter.shutdown()
        return ok

    def _record(self, ok: bool, into: dict[str, str], ids: list[str], cid: str) -> bool:
        if ok:
            into.update(dict.fromkeys(ids, cid))
        else:
            self.sent.refused_exports += 1
        return ok

    def rounds(self, n: int) -> None:
        for _ in range(n):
            self.round()

    def round(self) -> None:
        """One export of each signal over each transport."""
        for transport in ("grpc", "http"):
            self.spans(transport)
            self.logs(transport)
            self.metrics(transport)


# -- reading the file sink back ---------------------------------------------------------------

def _attrs(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: next(iter(a.get("value", {}).values()), None) for a in attributes}


# (item name, tenant.id, correlation.id) of an item at the sink or in Kafka; the ids are None when missing.
Landed = tuple[str, str | None, str | None]
ItemCounts = dict[str, Counter[Landed]]


def received(pipeline: PipelineProcess) -> ItemCounts:
    """signal -> Counter of (item id, tenant, correlation id) over everything the sink wrote."""
    return count_items({name: pipeline.read(name) for name in ("traces", "logs", "metrics")})


def in_kafka(bootstrap: str, prefix: str) -> ItemCounts:
    """The same count over the records in the topics themselves, before any pipeline.

    Set beside ``received`` it tells where a duplicate came from: stored twice in Kafka (a
    publish retried), or read twice from it (a record redelivered to the sink).
    """
    lines = {}
    for signal in Signal:
        records = asyncio.run(read_topic(bootstrap, signal.topic(prefix)))
        lines[signal.value] = [json.loads(proto_to_json(signal, r.value or b"")) for r in records]
    return count_items(lines)


def count_items(lines: Mapping[str, list[dict[str, Any]]]) -> ItemCounts:
    """signal -> Counter of (item id, tenant, correlation id) over OTLP/JSON requests by signal."""
    out: ItemCounts = {"traces": Counter(), "logs": Counter(), "metrics": Counter()}
    for line in lines["traces"]:
        for rs in line.get("resourceSpans", []):
            res = _attrs(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    out["traces"][(span["name"], res.get("tenant.id"), res.get("correlation.id"))] += 1
    for line in lines["logs"]:
        for rl in line.get("resourceLogs", []):
            res = _attrs(rl.get("resource", {}).get("attributes", []))
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    body = rec.get("body", {}).get("stringValue", "")
                    out["logs"][(body, res.get("tenant.id"), res.get("correlation.id"))] += 1
    for line in lines["metrics"]:
        for rm in line.get("resourceMetrics", []):
            res = _attrs(rm.get("resource", {}).get("attributes", []))
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    kind = next((k for k in ("sum", "gauge", "histogram") if k in metric), None)
                    for dp in metric.get(kind, {}).get("dataPoints", []) if kind else []:
                        item = _attrs(dp.get("attributes", [])).get("item.id", "")
                        out["metrics"][(item, res.get("tenant.id"), res.get("correlation.id"))] += 1
    return out


def missing(sent: Sent, got: ItemCounts, tenant: str = "default") -> int:
    """How many acknowledged items are not (yet) in the sink with the right tenant and correlation id."""
    n = 0
    for signal_name, items in (("traces", sent.spans), ("logs", sent.logs), ("metrics", sent.points)):
        have = got[signal_name]
        n += sum(1 for item, cid in items.items() if have[(item, tenant, cid)] == 0)
    return n
