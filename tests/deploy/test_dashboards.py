"""Grafana dashboards: the committed JSON is what deploy/grafana/dashboards.py generates, and every
panel's query, evaluated by a real Prometheus (private, free port, scrape_interval 1s) scraping a
live gateway and pipelines worker that took real traffic (some of it refused), succeeds and is
not empty. The gateway runs with the disk spool in front of Kafka (spool.mode always, so batches
are appended, fsynced and replayed; a small spool.max_bytes so one large request is refused as
full) and TLS on its admin port (certificates from trustme, scraped over https), so the spool and
certificate-expiry panels have data. Every metric a query names must be one the processes expose
(so a renamed metric fails here even in panels that read 0 when nothing went wrong).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.deploy.tools import run, tool
from tests.e2e.kafka_pipeline import Clients, PipelineProcess, kafka_env, unique_prefix
from tests.gateway_process import REPO_ROOT, GatewayProcess, free_port
from tests.stackenv import KAFKA_BOOTSTRAP, require
from tests.tls_certs import Pki
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's macros and this dashboard's variables, as a user with every tenant selected sees them.
MACROS = {"$__rate_interval": "15s", "$__interval": "5s", "$tenant": ".*", "${datasource}": "prometheus"}
METRIC = re.compile(r"\b((?:gateway|pipeline)_[a-z0-9_]+)")
SPOOL_MAX_BYTES = 256 * 1024  # above every batch of the ordinary traffic, below the large one


def _panels() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every query of every panel."""
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets") or []:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def _expand(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def test_generated_json_is_current() -> None:
    run([str(REPO_ROOT / ".venv" / "bin" / "python"), str(GRAFANA / "dashboards.py"), "--check"])
    assert {p.name for p in DASHBOARDS} == {"gateway-overview.json", "pipelines.json"}
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        names = [v["name"] for v in doc["templating"]["list"]]
        assert names[0] == "datasource", names
        for panel in doc["panels"]:
            refs = [t["refId"] for t in panel.get("targets") or []]
            assert len(refs) == len(set(refs)), f"{path.name}: {panel['title']}: refIds {refs}"


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str], https: dict[str, Path] | None = None) -> None:
        """``https``: jobs scraped over TLS, with the CA file that signed their certificate."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs: list[dict[str, Any]] = []
        for job, target in targets.items():
            scrape: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": [target]}]}
            if https and job in https:
                scrape |= {"scheme": "https", "tls_config": {"ca_file": str(https[job]),
                                                             "server_name": "localhost"}}
            jobs.append(scrape)
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Prometheus, GatewayProcess, PipelineProcess]]:
    require("kafka")
    prefix = unique_prefix("dash")
    workdir = Path(tempfile.mkdtemp(prefix="tg-dash-"))
    pki = Pki(workdir)
    server = pki.server()
    # "always", not "on_failure": with Kafka healthy only "always" appends, fsyncs and replays.
    env = kafka_env(KAFKA_BOOTSTRAP, prefix, TG_AUTH__TRUST_TENANT_HEADER="true",
                    TG_LIMITS__TENANTS="{slow: {items_per_second: 1, items_burst: 1}}",
                    TG_SPOOL__MODE="always", TG_SPOOL__DIR=str(workdir / "spool"),
                    TG_SPOOL__MAX_BYTES=str(SPOOL_MAX_BYTES), TG_SPOOL__MIN_FREE_BYTES="0",
                    TG_ADMIN__TLS__CERT_FILE=str(server.cert), TG_ADMIN__TLS__KEY_FILE=str(server.key))
    gw = GatewayProcess(env, workdir=workdir / "gateway", admin_ssl=pki.client_context())
    pipe = PipelineProcess(kafka_env(KAFKA_BOOTSTRAP, prefix))
    prom: Prometheus | None = None
    try:
        gw.start()
        pipe.start()
        prom = Prometheus(workdir, {"telemetry-gateway": f"127.0.0.1:{gw.admin_port}",
                                    "telemetry-gateway-pipelines": f"127.0.0.1:{pipe.admin_port}"},
                          https={"telemetry-gateway": pki.ca_file})
        wait_for(prom.ready, within=30, what="private Prometheus ready")
        _traffic(gw)
        wait_for(lambda: pipe.metrics().get(("pipeline_sink_acked_records_total",
                                             frozenset({("sink", "file")})), 0) > 0,
                 within=30, what="the pipelines worker to write records")
        yield prom, gw, pipe
    finally:
        if prom is not None:
            prom.stop()
        pipe.cleanup()
        gw.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _traffic(gw: GatewayProcess) -> None:
    """Accepted traffic on both transports and every signal, and refusals of several reasons."""
    clients = Clients(gw)  # tenant "default": no X-Scope-OrgID
    for transport in ("grpc", "http"):
        assert clients.spans(transport), transport
        assert clients.logs(transport) and clients.metrics(transport), transport
    for path in ("/v1/traces", "/v1/logs", "/v1/metrics"):
        for content_type, body in (("application/x-protobuf", b"\x0a\xff\xff\xff\xff\x0f"),  # malformed
                                   ("text/plain", b"hello")):                                  # 415
            req = urllib.request.Request(gw.http_url + path, data=body,
                                         headers={"content-type": content_type})
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=5)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "dashboards"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("dashboards")
    for i in range(50):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    spans = memory.get_finished_spans()
    # tenant acme accepted; tenant slow over its limit of 1 item/s: refused as rate_limited
    acme = OTLPSpanExporter(endpoint=gw.http_url + "/v1/traces", headers={"x-scope-orgid": "acme"},
                            timeout=5)
    assert acme.export(spans) == SpanExportResult.SUCCESS
    body = encode_spans(spans).SerializeToString()
    for _ in range(3):
        req = urllib.request.Request(gw.http_url + "/v1/traces", data=body,
                                     headers={"content-type": "application/x-protobuf",
                                              "x-scope-orgid": "slow"})
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 429, exc.code
    assert gw.metric("gateway_refused_requests_total", reason="rate_limited") > 0
    assert gw.metric("gateway_refused_requests_total", reason="malformed") > 0
    # One request larger than spool.max_bytes: the spool refuses its batch as full (a 503).
    big = [{"resource": {}, "scopeSpans": [{"spans": [
        {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "x" * 1000,
         "startTimeUnixNano": "1", "endTimeUnixNano": "2"} for i in range(SPOOL_MAX_BYTES // 900)]}]}]
    req = urllib.request.Request(gw.http_url + "/v1/traces", data=json.dumps({"resourceSpans": big}).encode(),
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 503, refused.value.code
    assert gw.metric("gateway_spool_refused_batches_total", reason="full") > 0
    assert gw.metric("gateway_spool_replayed_items_total", signal="traces") > 0


def test_every_panel_query_returns_data(live: tuple[Prometheus, GatewayProcess, PipelineProcess]) -> None:
    prom = live[0]
    panels = _panels()
    last: dict[str, str] = {}

    def all_answer() -> bool:
        last.clear()
        for dashboard, title, expr in panels:
            answer = prom.get("/api/v1/query", query=_expand(expr))
            if answer.get("status") != "success":
                last[f"{dashboard}: {title}: {expr}"] = f"error: {answer.get('error')}"
            elif not answer["data"]["result"]:
                last[f"{dashboard}: {title}: {expr}"] = "empty"
        return not last
    try:
        wait_for(all_answer, within=45, interval=1.0, what="every panel query to return data")
    except AssertionError:
        pytest.fail("panel queries failing or empty:\n" + "\n".join(f"  {k} -> {v}" for k, v in last.items()),
                    pytrace=False)


def test_every_metric_named_is_exposed(live: tuple[Prometheus, GatewayProcess, PipelineProcess]) -> None:
    prom = live[0]

    def metadata() -> set[str] | None:
        answer = prom.get("/api/v1/targets/metadata", match_target='{job=~".+"}')
        names = {m["metric"] for m in answer.get("data", [])}
        return names if any(n.startswith("pipeline_") for n in names) else None
    exposed = wait_for(metadata, within=20, what="target metadata of both jobs")
    missing = set()
    for _, title, expr in _panels():
        for name in METRIC.findall(expr):
            # Families as the exposition names them: counters without _total in OpenMetrics
            # (what the pipelines' server answers Prometheus), histograms without their suffixes.
            if not {name, re.sub(r"_(bucket|sum|count|total)$", "", name)} & exposed:
                missing.add(f"{name} ({title})")
    assert not missing, f"metrics no process exposes: {sorted(missing)}"
