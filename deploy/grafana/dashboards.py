"""Grafana dashboards for telemetry-gateway, as code (grafana-foundation-sdk), written as JSON.

    .venv/bin/python deploy/grafana/dashboards.py           # (re)write deploy/grafana/dashboards/*.json
    .venv/bin/python deploy/grafana/dashboards.py --check   # exit 1 if a committed JSON is stale

Two dashboards: the gateway overview and the pipelines. The scrape jobs are named as the chart's
ServiceMonitor and deploy/prometheus/alerts.yaml name them: ``telemetry-gateway`` and
``telemetry-gateway-pipelines``. Panels showing errors append ``or on() vector(0)`` so "no error"
reads 0 rather than "No data"; tests/deploy/test_dashboards.py evaluates every expression against a
real Prometheus scraping a live gateway and pipelines worker, and checks every metric an
expression names is one the processes expose.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
GATEWAY = 'job="telemetry-gateway"'
PIPELINES = 'job="telemetry-gateway-pipelines"'
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def rate(metric: str, by: str, selector: str = GATEWAY) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def quantile(phi: float, metric: str, by: str, selector: str = GATEWAY) -> str:
    return f"histogram_quantile({phi}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def zero_if_none(expr: str) -> str:
    return f"({expr}) or on() vector(0)"


TENANT = f'{GATEWAY}, tenant=~"$tenant"'

GATEWAY_PANELS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("Traffic", (
        PanelSpec("Accepted items/s by signal", "Spans, log records and data points accepted "
                  "(OK or partial success), for the selected tenants.",
                  (q(rate("gateway_received_items_total", "signal", TENANT), "{{signal}}"),), "short"),
        PanelSpec("Refused items/s by signal and reason", "Items refused whole or rejected in a "
                  "partial success. lost_after_ack: acknowledged, then lost (pages).",
                  (q(zero_if_none(rate("gateway_refused_items_total", "signal, reason")),
                     "{{signal}} {{reason}}"),)),
        PanelSpec("Refused requests/s by reason and transport", "Clients' fault: malformed, too_large, "
                  "unauthenticated, rate_limited, unsupported_media_type. Ours: bus_unavailable, "
                  "overloaded. shutting_down: during a rollout.",
                  (q(zero_if_none(rate("gateway_refused_requests_total", "reason, transport")),
                     "{{transport}} {{reason}}"),)),
        PanelSpec("Accepted bytes/s by signal", "Request bytes accepted, after decompression.",
                  (q(rate("gateway_received_bytes_total", "signal", TENANT), "{{signal}}"),), "Bps"),
        PanelSpec("Top 10 tenants by items/s", "The tenants sending the most, per signal summed.",
                  (q(f"topk(10, {rate('gateway_received_items_total', 'tenant', TENANT)})", "{{tenant}}"),)),
        PanelSpec("Incomplete requests/s", "Clients that closed, cancelled or timed out mid-request.",
                  (q(zero_if_none(rate("gateway_incomplete_requests_total", "transport, stage, cause")),
                     "{{transport}} {{stage}} {{cause}}"),)),
    )),
    ("Latency and load", (
        PanelSpec("Request latency p50 / p99 by transport", "From a complete request to its answer "
                  "(with Kafka: after Kafka acknowledged). Objective: 99 % within 1 s.",
                  (q(quantile(0.5, "gateway_request_seconds", "transport"), "p50 {{transport}}"),
                   q(quantile(0.99, "gateway_request_seconds", "transport"), "p99 {{transport}}")), "s"),
        PanelSpec("In-flight requests", "Export requests being handled now, all workers summed "
                  "(the HPA's custom metric).",
                  (q(f"sum by (transport) (gateway_inflight_requests{{{GATEWAY}}})", "{{transport}}"),)),
        PanelSpec("Batch size p50 / p99 (bytes)", "Batches handed to the bus.",
                  (q(quantile(0.5, "gateway_batch_bytes", "signal"), "p50 {{signal}}"),
                   q(quantile(0.99, "gateway_batch_bytes", "signal"), "p99 {{signal}}")), "bytes"),
        PanelSpec("Items per batch (mean)", "Items in the batches handed to the bus.",
                  (q(f"{rate('gateway_batch_items_sum', 'signal')}"
                     f" / {rate('gateway_batch_items_count', 'signal')}",
                     "{{signal}}"),)),
        PanelSpec("Flush time p99", "Time to publish one batch to the bus.",
                  (q(quantile(0.99, "gateway_flush_seconds", "signal"), "{{signal}}"),), "s"),
        PanelSpec("Workers ready", "Gateway workers ready per instance (gateway_ready: each worker's "
                  "own part of /readyz; an instance is ready when all its workers are), and 1 per "
                  "pipelines worker Prometheus scrapes.",
                  (q(f"sum by (instance) (gateway_ready{{{GATEWAY}}})", "{{instance}} ready workers"),
                   q(f"up{{{PIPELINES}}}", "pipelines {{instance}} up")),
                  kind="stat"),
        PanelSpec("TLS certificate expires in", "Time left until the notAfter of the certificate each "
                  "listener serves (server: OTLP gRPC and HTTP; admin), the soonest over the instances. "
                  "Alerts at 14 days (ticket) and 2 days (page).",
                  (q(f"min by (listener) (gateway_tls_certificate_expiry_timestamp_seconds{{{GATEWAY}}})"
                     " - time()", "{{listener}}"),), "s", kind="stat"),
        PanelSpec("TLS reload failures", "Failing: 1 while a listener's (server, admin) replaced "
                  "certificate, key or client CA files do not load and the previous set stays in "
                  "service (gateway_tls_reload_failing, the highest over the instances); alerts "
                  "(ticket) when it lasts 15 minutes. Failed: broken changes found in the last 15 "
                  "minutes, each counted once.",
                  (q(zero_if_none(f"max by (listener) (gateway_tls_reload_failing{{{GATEWAY}}})"),
                     "{{listener}} failing"),
                   q(zero_if_none(f"sum by (listener) (increase(gateway_tls_reload_failures_total"
                                  f"{{{GATEWAY}}}[15m]))"),
                     "{{listener}} failed"))),
    )),
    ("Spool", (
        PanelSpec("Spool bytes vs max", "Unacknowledged bytes in the disk spool against spool.max_bytes "
                  "(summed over the workers of each instance). At the max, batches are refused as full.",
                  (q(f"sum by (instance) (gateway_spool_bytes{{{GATEWAY}}})", "{{instance}} used"),
                   q(f"sum by (instance) (gateway_spool_max_bytes{{{GATEWAY}}})", "{{instance}} max")),
                  "bytes"),
        PanelSpec("Spool records", "Batches in the spool not yet acknowledged by Kafka.",
                  (q(f"sum by (instance) (gateway_spool_records{{{GATEWAY}}})", "{{instance}}"),)),
        PanelSpec("Spool oldest record age", "Age of the oldest unacknowledged record: how long Kafka "
                  "has not taken the backlog (0: empty).",
                  (q(f"max by (instance) (gateway_spool_oldest_age_seconds{{{GATEWAY}}})", "{{instance}}"),),
                  "s"),
        PanelSpec("Spool items/s appended vs replayed", "Items written to the spool, and items of "
                  "spooled batches Kafka acknowledged. Appended above replayed: the backlog grows.",
                  (q(zero_if_none(rate("gateway_spool_appended_items_total", "signal")),
                     "appended {{signal}}"),
                   q(zero_if_none(rate("gateway_spool_replayed_items_total", "signal")),
                     "replayed {{signal}}"))),
        PanelSpec("Spool refused batches/s by reason", "Batches the spool refused (clients got 503 / "
                  "UNAVAILABLE): full (spool.max_bytes), disk_floor (spool.min_free_bytes), max_age "
                  "(spool.max_age_s), write_error.",
                  (q(zero_if_none(rate("gateway_spool_refused_batches_total", "reason")), "{{reason}}"),)),
        PanelSpec("Spool fsync p50 / p99", "Duration of each group commit's fdatasync: the disk's share "
                  "of the answer time while spooling.",
                  (q(quantile(0.5, "gateway_spool_fsync_seconds", "job"), "p50"),
                   q(quantile(0.99, "gateway_spool_fsync_seconds", "job"), "p99")), "s"),
        PanelSpec("Spool corrupt records and torn bytes", "Records that failed their checksum "
                  "(quarantined, not replayed: lost) and torn tails cut at start-up (never acknowledged), "
                  "per interval. Replay errors/s: Kafka refusing the backlog (retried).",
                  (q(zero_if_none(f"sum(increase(gateway_spool_corrupt_records_total{{{GATEWAY}}}[{RATE}]))"),
                     "corrupt records"),
                   q(zero_if_none(f"sum(increase(gateway_spool_torn_bytes_total{{{GATEWAY}}}[{RATE}]))"),
                     "torn bytes"),
                   q(zero_if_none(f"sum(rate(gateway_spool_replay_errors_total{{{GATEWAY}}}[{RATE}]))"),
                     "replay errors/s"))),
    )),
    ("Kafka", (
        PanelSpec("Kafka produce latency p50 / p99", "From publish to Kafka's acknowledgement of "
                  "every piece of a batch (acks=all).",
                  (q(quantile(0.5, "gateway_kafka_produce_seconds", "job"), "p50"),
                   q(quantile(0.99, "gateway_kafka_produce_seconds", "job"),
                     "p99")), "s"),
        PanelSpec("Kafka produce errors/s", "Batches Kafka did not acknowledge: their clients got "
                  "503 / UNAVAILABLE and retry.",
                  (q(zero_if_none(rate("gateway_kafka_produce_errors_total", "topic, error")),
                     "{{topic}} {{error}}"),)),
        PanelSpec("Kafka auth failures/s", "Connection attempts the brokers refused on security, by "
                  "client (producer, admin) and reason (sasl: user or password refused; tls: handshake "
                  "failed). The gateway is not ready meanwhile and keeps trying.",
                  (q(zero_if_none(rate("gateway_kafka_auth_failures_total", "client, reason")),
                     "{{client}} {{reason}}"),)),
        PanelSpec("Kafka bytes/s by topic", "Message bytes Kafka acknowledged.",
                  (q(rate("gateway_kafka_produced_bytes_total", "topic"), "{{topic}}"),), "Bps"),
        PanelSpec("Kafka message size p99", "Each message value (a batch or a piece of one).",
                  (q(quantile(0.99, "gateway_kafka_batch_bytes", "job"),
                     "p99"),), "bytes"),
    )),
)

PIPELINES_PANELS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("Consumers", (
        PanelSpec("Consumer lag per partition", "Records after the last one each worker took "
                  "(high watermark - position).",
                  (q(f"sum by (instance, topic, partition) (pipeline_consumer_lag{{{PIPELINES}}})",
                     "{{instance}} {{topic}}/{{partition}}"),)),
        PanelSpec("Consumer lag trend (records/s)", "Above 0 for long: the workers fall behind; add "
                  "workers (up to the partitions) or partitions.",
                  (q(f"sum by (topic) (deriv(pipeline_consumer_lag{{{PIPELINES}}}[5m]))", "{{topic}}"),)),
        PanelSpec("Commit errors/s", "Offset commits deferred while the broker is unreachable.",
                  (q(zero_if_none(rate("pipeline_commit_errors_total", "error", PIPELINES)), "{{error}}"),)),
        PanelSpec("Kafka auth failures/s", "Connection attempts the brokers refused on security, by "
                  "client (consumer, admin; producer: the dead letters') and reason (sasl, tls). The data "
                  "waits in Kafka meanwhile.",
                  (q(zero_if_none(rate("gateway_kafka_auth_failures_total", "client, reason", PIPELINES)),
                     "{{client}} {{reason}}"),)),
    )),
    ("Sinks", (
        PanelSpec("Sink acknowledged records/s", "Records the store acknowledged (then committed).",
                  (q(rate("pipeline_sink_acked_records_total", "sink", PIPELINES), "{{sink}}"),)),
        PanelSpec("Sink errors/s by kind", "transient: retried (data waits in Kafka); permanent: "
                  "dead-lettered; unexpected: retried, then record by record; gave_up: dead-lettered.",
                  (q(zero_if_none(rate("pipeline_sink_errors_total", "sink, kind", PIPELINES)),
                     "{{sink}} {{kind}}"),)),
        PanelSpec("Dead-lettered records", "Records a store refused for good, in the dead-letter "
                  "topic (per interval).",
                  (q(zero_if_none(f"sum by (sink) (increase(pipeline_dead_letter_records_total"
                                  f"{{{PIPELINES}}}[{RATE}]))"),
                     "{{sink}}"),)),
        PanelSpec("Store credential refusals/s", "Requests a store refused for our credentials: 401 / "
                  "403, UNAUTHENTICATED / PERMISSION_DENIED. Retried: the data waits in Kafka until the "
                  "secret is fixed.",
                  (q(zero_if_none(rate("pipeline_sink_auth_failures_total", "sink, code", PIPELINES)),
                     "{{sink}} {{code}}"),)),
        PanelSpec("Batches isolated record by record", "After repeated unexpected sink errors.",
                  (q(zero_if_none(rate("pipeline_isolated_batches_total", "sink", PIPELINES)), "{{sink}}"),)),
    )),
    ("Stores", (
        PanelSpec("Remote write: dropped samples/s", "Samples not written to Prometheus, by reason "
                  "(conversion, delta temporality, a 4xx answer).",
                  (q(zero_if_none(rate("pipeline_remote_write_dropped_samples_total", "reason", PIPELINES)),
                     "{{reason}}"),)),
        PanelSpec("Remote write: samples/s and requests/s by status", "Samples accepted and "
                  "requests by HTTP status.",
                  (q(zero_if_none(f"sum(rate(pipeline_remote_write_samples_total{{{PIPELINES}}}[{RATE}]))"),
                     "samples"),
                   q(zero_if_none(rate("pipeline_remote_write_requests_total", "status", PIPELINES)),
                     "{{status}}"))),
        PanelSpec("Elasticsearch documents/s by outcome", "written, rejected (dead-lettered) or "
                  "retried, per signal.",
                  (q(zero_if_none(rate("pipeline_es_documents_total", "signal, outcome", PIPELINES)),
                     "{{signal}} {{outcome}}"),)),
        PanelSpec("Jaeger export calls/s by code", "gRPC status of each export to Jaeger.",
                  (q(zero_if_none(rate("pipeline_jaeger_requests_total", "code", PIPELINES)), "{{code}}"),)),
        PanelSpec("File sink rejected parts/s", "Parts that do not convert to OTLP/JSON.",
                  (q(zero_if_none(rate("pipeline_file_sink_rejected_parts_total", "signal", PIPELINES)),
                     "{{signal}}"),)),
    )),
)


def datasource_variable() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def tenant_variable() -> db.QueryVariable:
    return (db.QueryVariable("tenant").label("Tenant").datasource(DS)
            .query({"query": f"label_values(gateway_received_items_total{{{GATEWAY}}}, tenant)",
                    "refId": "tenant"})
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all")))


def panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel:
    p: timeseries.Panel | stat.Panel = timeseries.Panel() if spec.kind == "timeseries" else stat.Panel()
    p.title(spec.title).description(spec.description).datasource(DS).unit(spec.unit)
    p.span(spec.width).height(spec.height)
    for i, query in enumerate(spec.queries):
        p.with_target(prom.Dataquery().expr(query.expr).legend_format(query.legend)
                      .ref_id(chr(ord("A") + i)).datasource(DS))
    return p


def build(title: str, uid: str, rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...],
          with_tenant: bool) -> dict[str, Any]:
    d = (db.Dashboard(title).uid(uid).tags(["telemetry-gateway"]).refresh("30s")
         .time("now-1h", "now").timezone("browser").editable()
         .with_variable(datasource_variable()))
    if with_tenant:
        d.with_variable(tenant_variable())
    for row_title, specs in rows:
        d.with_row(db.Row(row_title))
        for spec in specs:
            d.with_panel(panel(spec))
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return out


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "gateway-overview.json": build("telemetry-gateway / overview", "tg-gateway-overview",
                                       GATEWAY_PANELS, with_tenant=True),
        "pipelines.json": build("telemetry-gateway / pipelines", "tg-pipelines", PIPELINES_PANELS,
                                with_tenant=False),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed JSON differs")
    ns = parser.parse_args(argv)
    stale = []
    OUT_DIR.mkdir(exist_ok=True)
    for name, doc in dashboards().items():
        path = OUT_DIR / name
        text = render(doc)
        if ns.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run .venv/bin/python deploy/grafana/dashboards.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
