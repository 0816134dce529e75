"""One tenant's load shared by two pipelines workers (``partition_by: spread``, the default).

The gateway's ``KafkaBus`` publishes one tenant's batches to topics of four partitions; two
``telemetry-gateway pipelines`` processes of one consumer group each hold partitions and each
write records. Metrics go to the real Prometheus: every series (16 service instances, their
``target_info`` included) holds exactly one sample per batch, and no worker saw a sample refused
(out of order, duplicate, too old) or dead-lettered one, though the workers wrote in parallel.
Spans go to the real Elasticsearch: exactly one document per span, so the idempotent ids
(topic-partition-offset-position) stay distinct across partitions.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bus.contract import Batch
from bus.kafka.producer import KafkaBus
from otlp.signals import ATTR_TENANT, Signal
from pipelines.convert.es_docs import index_name
from settings.config import KafkaConfig
from tests import otlp_payloads, stackenv
from tests.e2e.kafka_pipeline import PipelineProcess, kafka_env, unique_prefix
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PARTITIONS = 4
INSTANCES = 16
BATCHES = 12
TIMEOUT = 90.0


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def metrics_batch(tenant: str, t_ns: int, n: int) -> bytes:
    """Every instance's ``spread.queue.depth`` (2 series) and ``spread.requests`` (1) at ``t_ns``."""
    req = ExportMetricsServiceRequest()
    for i in range(INSTANCES):
        rm = req.resource_metrics.add(resource=Resource(attributes=[
            _kv("service.name", f"spread-svc-{i % 4}"), _kv("service.instance.id", f"i-{i}"),
            _kv("host.name", f"host-{i}"), _kv(ATTR_TENANT, tenant)]))
        sm = rm.scope_metrics.add()
        sm.scope.name = "spread-test"
        g = sm.metrics.add(name="spread.queue.depth", unit="1")
        for queue in ("a", "b"):
            g.gauge.data_points.add(attributes=[_kv("queue", queue)], time_unix_nano=t_ns, as_int=n + i)
        s = sm.metrics.add(name="spread.requests", unit="1")
        s.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        s.sum.is_monotonic = True
        s.sum.data_points.add(start_time_unix_nano=t_ns - n * 1_000_000_000, time_unix_nano=t_ns, as_int=n)
    data: bytes = req.SerializeToString()
    return data


async def publish(cfg: KafkaConfig, batches: list[tuple[Signal, str, bytes]]) -> None:
    bus = KafkaBus(cfg)
    await bus.start()
    try:
        assert bus.readiness()[0], bus.readiness()[1]
        for n, (signal, tenant, data) in enumerate(batches):
            await bus.publish(Batch(signal, tenant, data, otlp_payloads.item_count(signal, data), [f"c{n}"]))
    finally:
        await bus.stop()


def assigned(worker: PipelineProcess) -> set[str]:
    """The partitions the worker's last rebalance gave it, from its log."""
    lines = [ln for ln in worker.log_path.read_text(errors="replace").splitlines() if " assigned " in ln]
    if not lines:
        return set()
    return {p.strip() for p in lines[-1].split(" assigned ", 1)[1].split(",") if p.strip()}


@contextmanager
def two_workers(env: dict[str, str], sink: str,
                topic: str) -> Iterator[tuple[PipelineProcess, PipelineProcess]]:
    """Two workers of one group, given once each holds two of the four partitions of ``topic``."""
    with ExitStack() as stack:
        workers = (PipelineProcess(env, sink), PipelineProcess(env, sink))
        for w in workers:
            stack.callback(w.cleanup)
            w.start()

        def split_evenly() -> bool:
            held = [{p for p in assigned(w) if p.startswith(topic + "/")} for w in workers]
            return len(held[0]) == len(held[1]) == PARTITIONS // 2 and not held[0] & held[1]
        wait_for(split_evenly, within=TIMEOUT, what="both workers to hold two partitions each")
        yield workers
        for w in workers:
            assert w.stop() == 0, w.log()


def sample(worker: PipelineProcess, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in worker.metrics().items()
               if n == name and set(labels.items()) <= set(ls))


def prom_query(promql: str) -> list[dict[str, Any]]:
    url = stackenv.PROMETHEUS_URL + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_one_tenant_metrics_over_two_workers_land_exactly_and_in_order() -> None:
    stackenv.require("kafka", "prometheus")
    prefix = unique_prefix("spread_metrics")
    tenant = "spread-" + uuid.uuid4().hex[:8]
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix, TG_BUS__KAFKA__PARTITIONS=str(PARTITIONS),
                    TG_PIPELINES__PROMETHEUS__URL=stackenv.PROMETHEUS_URL + "/api/v1/write")
    cfg = KafkaConfig(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, topic_prefix=prefix, partitions=PARTITIONS)
    asyncio.run(publish(cfg, []))  # the topics, with four partitions, before the workers create them
    start_ns = (int(time.time()) - 120) * 1_000_000_000
    batches = [(Signal.METRICS, tenant, metrics_batch(tenant, start_ns + n * 5_000_000_000, n + 1))
               for n in range(BATCHES)]
    with two_workers(env, "prometheus", Signal.METRICS.topic(prefix)) as workers:
        asyncio.run(publish(cfg, batches))
        series = INSTANCES * (3 + 1)  # 2 queue depths, 1 counter, target_info per instance

        def landed() -> list[dict[str, Any]] | None:
            got = prom_query(f'count_over_time({{tenant="{tenant}"}}[10m])')
            return got if len(got) == series and all(int(r["value"][1]) == BATCHES for r in got) else None
        wait_for(landed, within=TIMEOUT, interval=0.5,
                 what=f"{series} series with {BATCHES} samples each in Prometheus")
        acked = [sample(w, "pipeline_sink_acked_records_total", sink="prometheus") for w in workers]
        assert all(a > 0 for a in acked) and sum(acked) >= BATCHES, acked
        for w in workers:
            assert sample(w, "pipeline_remote_write_dropped_samples_total") == 0, w.log()
            assert sample(w, "pipeline_dead_letter_records_total") == 0, w.log()
    per_name = {r["metric"]["__name__"]: int(r["value"][1])
                for r in prom_query(f'count by (__name__) ({{tenant="{tenant}"}})')}
    assert per_name == {"spread_queue_depth_ratio": 2 * INSTANCES, "spread_requests_total": INSTANCES,
                        "target_info": INSTANCES}


def test_one_tenant_spans_over_two_workers_land_once_each_in_elasticsearch() -> None:
    stackenv.require("kafka", "elasticsearch")
    prefix = unique_prefix("spread_spans")
    tenant = "spread-" + uuid.uuid4().hex[:8]
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix, TG_BUS__KAFKA__PARTITIONS=str(PARTITIONS),
                    TG_PIPELINES__ELASTICSEARCH__HOSTS=stackenv.ES_URL)
    cfg = KafkaConfig(bootstrap_servers=stackenv.KAFKA_BOOTSTRAP, topic_prefix=prefix, partitions=PARTITIONS)
    asyncio.run(publish(cfg, []))
    batches = [(Signal.TRACES, tenant, otlp_payloads.payload(Signal.TRACES, spans_per_request=200, traces=20,
                                                              resources=2, seed=n)) for n in range(BATCHES)]
    spans = sum(otlp_payloads.item_count(Signal.TRACES, data) for _, _, data in batches)
    with two_workers(env, "elasticsearch", Signal.TRACES.topic(prefix)) as workers:
        asyncio.run(publish(cfg, batches))

        def count() -> int:
            url = f"{stackenv.ES_URL}/{index_name(Signal.TRACES, tenant)}/_count"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    return int(json.loads(resp.read())["count"])
            except urllib.error.HTTPError:
                return 0  # the data stream is not there yet
        wait_for(lambda: count() == spans or None, within=TIMEOUT, interval=0.5,
                 what=f"{spans} span documents in Elasticsearch")
        acked = [sample(w, "pipeline_sink_acked_records_total", sink="elasticsearch") for w in workers]
        assert all(a > 0 for a in acked), acked
        for w in workers:
            assert sample(w, "pipeline_dead_letter_records_total") == 0, w.log()
    assert count() == spans, "no more documents after the workers stopped"
