"""The spool at its byte limit, a spool with a torn tail and a flipped byte, and ``spool replay``.

- Full: with Kafka down and ``spool.max_bytes`` small, requests get 503 / UNAVAILABLE with a
  retry hint once the spool is full; nothing acknowledged is lost, and acceptance resumes as the
  spool drains into Kafka.
- Damaged: a gateway starting on a spool whose last record was cut mid-way and with one byte
  flipped inside a segment replays every other record, counts the corrupt one, quarantines it,
  and keeps serving.
- ``telemetry-gateway spool replay --dir`` drains a spool a dead node left into Kafka.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bus.contract import Batch
from bus.spool import log as fmt
from otlp.signals import HEADER_TENANT, Signal
from tests import otlp_payloads, stackenv
from tests.e2e.kafka_pipeline import kafka_env, unique_prefix
from tests.e2e.private_kafka import PrivateKafka
from tests.gateway_process import REPO_ROOT, GatewayProcess
from tests.integration.kafka_read import read_topic
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SPANS = 5
BODY = otlp_payloads.payload(Signal.TRACES, spans_per_request=SPANS)


@contextmanager
def temp_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tg-spool-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def post(gw: GatewayProcess) -> tuple[int, str]:
    req = urllib.request.Request(gw.http_url + "/v1/traces", data=BODY, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers.get("Retry-After", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After", "")


def export_grpc(gw: GatewayProcess) -> tuple[grpc.StatusCode, float | None]:
    req = ExportTraceServiceRequest.FromString(BODY)
    with grpc.insecure_channel(gw.grpc_target) as channel:
        try:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=15)
        except grpc.RpcError as exc:
            trailers: Any = exc.trailing_metadata() or ()
            details = dict(trailers).get("grpc-status-details-bin")
            delay = None
            if details:
                st = status_pb2.Status.FromString(details)
                info = error_details_pb2.RetryInfo()
                if st.details and st.details[0].Unpack(info):
                    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return exc.code(), delay  # type: ignore[no-any-return]
    return grpc.StatusCode.OK, None


def spans_in_kafka(bootstrap: str, prefix: str) -> int:
    records = asyncio.run(read_topic(bootstrap, Signal.TRACES.topic(prefix)))
    return sum(otlp_payloads.item_count(Signal.TRACES, r.value or b"") for r in records)


def test_spool_full_refuses_retryably_loses_nothing_and_resumes_as_it_drains() -> None:
    broker = PrivateKafka().start()
    prefix = unique_prefix("spoolfull")
    with temp_dir() as sdir:
        env = kafka_env(broker.bootstrap, prefix, TG_SPOOL__MODE="on_failure", TG_SPOOL__DIR=str(sdir),
                        TG_SPOOL__MAX_BYTES=str(40 * len(BODY)), TG_SPOOL__MIN_FREE_BYTES="0",
                        TG_SPOOL__FULL_RETRY_AFTER_MS="3000", TG_BUS__KAFKA__PUBLISH_TIMEOUT_MS="1000",
                        TG_BUS__KAFKA__RECONNECT_BACKOFF_MAX_MS="500",
                        TG_BUS__KAFKA__HEALTH_CHECK_INTERVAL_MS="500")
        gw = GatewayProcess(env)
        try:
            gw.start()
            acked = 0
            assert post(gw)[0] == 200
            acked += 1
            broker.stop()
            # Kafka gone: the spool takes requests until it is full, then refuses them retryably.
            statuses: list[tuple[int, str]] = []
            for _ in range(200):
                status, retry_after = post(gw)
                statuses.append((status, retry_after))
                if status == 200:
                    acked += 1
                else:
                    break
            assert statuses[-1] == (503, "3"), statuses[-3:]
            assert acked > 10, f"the spool took only {acked} requests"
            code, delay = export_grpc(gw)
            assert code == grpc.StatusCode.UNAVAILABLE and delay == 3.0, (code, delay)
            status, why = gw.readyz()
            assert status == 503 and "spool full" in why, (status, why)
            assert gw.metric("gateway_spool_refused_batches_total", reason="full") >= 2
            # Kafka back: the spool drains and requests are taken again.
            broker.start()
            wait_for(lambda: gw.metric("gateway_spool_records") == 0, within=60, what="the spool drained")
            wait_for(lambda: post(gw)[0] == 200, within=30, what="requests taken again")
            acked += 1
            assert export_grpc(gw)[0] == grpc.StatusCode.OK
            acked += 1
            wait_for(lambda: spans_in_kafka(broker.bootstrap, prefix) >= acked * SPANS, within=30,
                     what="every acknowledged span in Kafka")
            assert spans_in_kafka(broker.bootstrap, prefix) == acked * SPANS
            assert gw.stop() == 0, gw.log()
        finally:
            gw.cleanup()
            broker.cleanup()


def damaged_spool(directory: Path, records: int) -> tuple[int, int]:
    """A worker directory of ``records`` records, one with a flipped byte, the last cut mid-way.
    Returns (records that must replay, index of the corrupt one)."""
    worker = directory / "worker-0"
    worker.mkdir(parents=True)
    frames = [fmt.encode(i + 1, Batch(Signal.TRACES, "spooled", BODY, SPANS, [f"cid-{i}"]))
              for i in range(records)]
    data = bytearray(b"".join(frames))
    bad = records // 2
    at = sum(len(f) for f in frames[:bad]) + len(frames[bad]) - 10  # inside the payload
    data[at] ^= 0x5A
    data = data[: len(data) - len(frames[-1]) // 3]  # the last record torn
    (worker / fmt.segment_name(1)).write_bytes(bytes(data))
    return records - 2, bad


def tenant_spans(bootstrap: str, prefix: str, tenant: str) -> int:
    records = asyncio.run(read_topic(bootstrap, Signal.TRACES.topic(prefix)))
    return sum(otlp_payloads.item_count(Signal.TRACES, r.value or b"") for r in records
               if dict(r.headers).get(HEADER_TENANT, b"").decode() == tenant)


def test_start_on_a_torn_and_corrupt_spool_replays_the_rest_and_counts_the_bad_record() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("spooldamaged")
    with temp_dir() as sdir:
        good, _ = damaged_spool(sdir, 20)
        env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix, TG_SPOOL__MODE="on_failure",
                        TG_SPOOL__DIR=str(sdir), TG_SPOOL__MIN_FREE_BYTES="0")
        gw = GatewayProcess(env)
        try:
            gw.start()
            wait_for(lambda: tenant_spans(stackenv.KAFKA_BOOTSTRAP, prefix, "spooled") >= good * SPANS,
                     within=60, what="the good records replayed")
            wait_for(lambda: gw.metric("gateway_spool_records") == 0, within=30, what="the spool drained")
            assert tenant_spans(stackenv.KAFKA_BOOTSTRAP, prefix, "spooled") == good * SPANS
            assert gw.metric("gateway_spool_corrupt_records_total") == 1
            assert gw.metric("gateway_spool_torn_bytes_total") > 0
            assert gw.metric("gateway_spool_recovered_records_total") == good
            assert len(list((sdir / "worker-0" / fmt.QUARANTINE).glob("*.bad"))) == 1
            assert post(gw)[0] == 200  # still serving
            assert gw.stop() == 0, gw.log()
        finally:
            gw.cleanup()


def test_spool_replay_drains_a_dead_nodes_spool_into_kafka() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("spoolcli")
    with temp_dir() as sdir:
        good, _ = damaged_spool(sdir, 12)
        env = {**kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix), "PYTHONPATH": str(REPO_ROOT)}
        cli = [sys.executable, "-m", "gateway.cli", "spool"]
        inspect = subprocess.run([*cli, "inspect", "--dir", str(sdir)], capture_output=True, text=True,
                                 timeout=60, cwd=REPO_ROOT, env=env)
        assert inspect.returncode == 0, inspect.stderr
        out = inspect.stdout
        assert f"{good} record(s)" in out and "corrupt records: 1" in out, out
        replay = subprocess.run([*cli, "replay", "--dir", str(sdir), "--timeout", "60"], capture_output=True,
                                text=True, timeout=120, cwd=REPO_ROOT, env=env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert tenant_spans(stackenv.KAFKA_BOOTSTRAP, prefix, "spooled") == good * SPANS
        assert not fmt.segments(sdir / "worker-0")
