"""The disk spool through long Kafka outages: every client gets OK, nothing acknowledged is lost.

Each test runs its own broker (``PrivateKafka``) so stopping it disturbs no other test. Load is
the OpenTelemetry SDK's own exporters (gRPC and HTTP, every signal, tenant ``default``, each
item with an id) and the bench load generator (open loop, OTLP/HTTP, tenant ``bench`` through
X-Scope-OrgID), both at a steady rate through the whole outage. After Kafka returns the topics
are read back: every acknowledged SDK item is there with the right tenant and correlation id,
the bench's items per signal and tenant equal what it was acknowledged, and within each
(signal, tenant) the SDK's exports are in the order they were acknowledged.

The outage lasts ``OUTAGE_S``, longer than any SDK exporter retries (so without the spool the
data sent in it would be lost), and is the only deliberate wait.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.loadgen import LoadSpec, WorkerTotals, run_load
from bench.payloads import PayloadShape, item_count
from bus.spool import log as fmt
from otlp.json_mapping import proto_to_json
from otlp.signals import HEADER_TENANT, Signal
from tests.e2e.kafka_pipeline import Clients, in_kafka, kafka_env, missing, unique_prefix
from tests.e2e.private_kafka import PrivateKafka
from tests.gateway_process import GatewayProcess
from tests.integration.kafka_read import read_topic
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

OUTAGE_S = 120.0
"""How long Kafka stays down: past every SDK exporter's retries (tens of seconds)."""
BEFORE_S = 8.0  # load before the outage (wait_for, not a sleep: until this much was acknowledged)
BENCH_RATE = 1500.0  # items/s the bench generator offers, open loop
SDK_ROUND_EVERY_S = 1.0  # one export of each signal over each transport per second
BENCH_TENANT = "bench"
SDK_TENANT = "default"


def spool_env(bootstrap: str, prefix: str, spool_dir: Path, **extra: str) -> dict[str, str]:
    return kafka_env(bootstrap, prefix, TG_SPOOL__MODE="on_failure", TG_SPOOL__DIR=str(spool_dir),
                     TG_SPOOL__MIN_FREE_BYTES="0", TG_AUTH__TRUST_TENANT_HEADER="true",
                     TG_BUS__KAFKA__PUBLISH_TIMEOUT_MS="2000", TG_BUS__KAFKA__START_WAIT_MS="2000",
                     TG_BUS__KAFKA__RECONNECT_BACKOFF_MAX_MS="1000",
                     TG_BUS__KAFKA__HEALTH_CHECK_INTERVAL_MS="1000", **extra)


class SdkStream:
    """SDK exports at a steady pace in a thread until stopped."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.clients = Clients(gw, timeout_s=20)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdk-stream", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.clients.round()
                self._stop.wait(max(0.0, SDK_ROUND_EVERY_S - (time.monotonic() - started)))
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> SdkStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait (idempotent; a stream never started stops at once)."""
        self._stop.set()
        if not self._thread.is_alive():
            return
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "SDK stream did not stop"
        if self.error is not None:
            raise self.error


class BenchStream:
    """The bench load generator (open loop) in a thread for ``duration_s``."""

    def __init__(self, gw: GatewayProcess, duration_s: float) -> None:
        self.spec = LoadSpec(grpc_target=gw.grpc_target, http_url=gw.http_url, transport="http",
                             signal=Signal.LOGS, shape=PayloadShape(items=50, attributes=4), mode="open",
                             rate=BENCH_RATE, warmup_s=0.5, duration_s=duration_s, concurrency=32,
                             timeout_s=30.0, headers=(("x-scope-orgid", BENCH_TENANT),))
        self.totals: WorkerTotals | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-stream", daemon=True)

    def _run(self) -> None:
        try:
            self.totals = run_load(self.spec)
        except BaseException as exc:
            self.error = exc

    def start(self) -> BenchStream:
        self._thread.start()
        return self

    def join(self) -> WorkerTotals:
        self._thread.join(timeout=self.spec.duration_s + 120)
        assert not self._thread.is_alive(), "bench generator did not finish"
        if self.error is not None:
            raise self.error
        assert self.totals is not None
        return self.totals


def items_by_tenant(bootstrap: str, prefix: str) -> dict[tuple[str, str], int]:
    """(signal, tenant) -> items in the topics, counted from the framing."""
    out: Counter[tuple[str, str]] = Counter()
    for signal in Signal:
        for r in asyncio.run(read_topic(bootstrap, signal.topic(prefix))):
            headers = {k: v.decode() for k, v in r.headers}
            out[(signal.value, headers.get(HEADER_TENANT, ""))] += item_count(signal, r.value or b"")
    return dict(out)


_ID = re.compile(r"^(?:span|log|point)-(\d+)-\d+$")


def export_order(bootstrap: str, prefix: str, signal: Signal, tenant: str) -> dict[int, list[int]]:
    """partition -> the export numbers of ``tenant``'s SDK items in that partition of ``signal``'s
    topic, in offset order, first occurrence only.

    Order holds per partition, not across them: with ``partition_by: spread`` one tenant's
    exports are spread over every partition (spans by trace id, so a trace stays in order on one;
    log batches round robin; metrics by job/instance). An item found in more than one partition (a
    batch published again after an ambiguous failure may take another turn) is left out: the
    duplicate count checks it, and which copy came first has no meaning across partitions.
    """
    by_partition: dict[int, list[str]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    records = asyncio.run(read_topic(bootstrap, signal.topic(prefix)))
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = {k: v.decode() for k, v in r.headers}
        if headers.get(HEADER_TENANT) != tenant:
            continue
        doc = json.loads(proto_to_json(signal, r.value or b""))
        for name in _names(doc):
            if _ID.match(name):
                by_partition[r.partition].append(name)
                partitions_of[name].add(r.partition)
    out: dict[int, list[int]] = {}
    for partition, names in by_partition.items():
        seen: set[str] = set()
        seq = out.setdefault(partition, [])
        for name in names:
            if name not in seen and len(partitions_of[name]) == 1:
                seen.add(name)
                m = _ID.match(name)
                assert m
                seq.append(int(m.group(1)))
    return out


def _names(doc: dict[str, Any]) -> Iterator[str]:
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            yield from (s["name"] for s in ss.get("spans", []))
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            yield from (r.get("body", {}).get("stringValue", "") for r in sl.get("logRecords", []))
    for rm in doc.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for kind in ("sum", "gauge", "histogram"):
                    for dp in metric.get(kind, {}).get("dataPoints", []):
                        for a in dp.get("attributes", []):
                            if a["key"] == "item.id":
                                yield a["value"]["stringValue"]


@contextmanager
def spool_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tg-spool-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_delivery(broker: PrivateKafka, prefix: str, sdk: SdkStream, bench: WorkerTotals, *,
                   crashed: bool, ambiguous: float) -> dict[str, Any]:
    """Every acknowledged item in Kafka, in order per partition (one worker), and no more than the duplicates
    the gateway counted as possible: items spooled after a publish that failed part-way
    (``ambiguous``), or without a bound after a crash (replayed records the ledger had not seen)."""
    sent = sdk.clients.sent
    got = in_kafka(broker.bootstrap, prefix)
    lost = missing(sent, got, SDK_TENANT)
    assert lost == 0, f"{lost} acknowledged SDK item(s) not in Kafka"
    counts = items_by_tenant(broker.bootstrap, prefix)
    acked = {(s, SDK_TENANT): n for s, n in
             (("traces", len(sent.spans)), ("logs", len(sent.logs)), ("metrics", len(sent.points)))}
    acked[(bench_signal().value, BENCH_TENANT)] = bench.acked_items
    extra = 0
    for key, n in acked.items():
        have = counts.get(key, 0)
        assert have >= n, f"{key}: {have} in Kafka, {n} acknowledged"
        extra += have - n
    if not crashed:
        assert extra <= ambiguous, f"{extra} duplicate item(s) in Kafka, only {ambiguous} possible"
    # Order within a (signal, tenant) is a property of one worker process: with several, requests
    # are spread over them by SO_REUSEPORT and each publishes on its own, spool or not.
    for signal in Signal if not crashed else ():
        for partition, seq in export_order(broker.bootstrap, prefix, signal, SDK_TENANT).items():
            assert seq == sorted(seq), \
                f"{signal.value}/{SDK_TENANT}: exports out of order in partition {partition}"
    return {"acked": {f"{s}/{t}": n for (s, t), n in acked.items()}, "duplicate_items": extra,
            "ambiguous_items": ambiguous, "in_kafka": {f"{s}/{t}": n for (s, t), n in sorted(counts.items())}}


def bench_signal() -> Signal:
    return Signal.LOGS


def spool_records(gw: GatewayProcess) -> float:
    return gw.metric("gateway_spool_records")


def drain_and_measure(gw: GatewayProcess, broker_back_at: float) -> dict[str, float]:
    """Wait until the spool is empty; the replay rate from the broker's return to then."""
    replayed_before = gw.metric("gateway_spool_replayed_items_total")
    wait_for(lambda: spool_records(gw) == 0, within=150, interval=0.5, what="the spool drained into Kafka")
    took = time.monotonic() - broker_back_at
    items = gw.metric("gateway_spool_replayed_items_total")
    return {"drain_s": round(took, 1), "replayed_items_total": items,
            "replayed_items_since_return": items - replayed_before,
            "replayed_records_total": gw.metric("gateway_spool_replayed_records_total"),
            "replayed_bytes_total": gw.metric("gateway_spool_replayed_bytes_total")}


def load_then_stop_kafka(gw: GatewayProcess, sdk: SdkStream,
                         broker: PrivateKafka) -> tuple[BenchStream, float]:
    """Start the gateway and both loads, let them run BEFORE_S, stop Kafka; (bench, when Kafka stopped)."""
    gw.start()
    bench = BenchStream(gw, BEFORE_S + OUTAGE_S + 40).start()
    sdk.start()
    wait_for(lambda: len(sdk.clients.sent.spans) >= 20 * BEFORE_S, within=60,
             what="SDK exports acknowledged before the outage")
    broker.stop()
    down_at = time.monotonic()
    wait_for(lambda: spool_records(gw) > 0, within=30, what="the spool taking the outage")
    return bench, down_at


def test_kafka_down_two_minutes_every_client_gets_ok_and_nothing_is_lost() -> None:
    broker = PrivateKafka().start()
    prefix = unique_prefix("spool")
    with spool_dir() as sdir:
        gw = GatewayProcess(spool_env(broker.bootstrap, prefix, sdir))
        sdk = SdkStream(gw)
        try:
            bench, down_at = load_then_stop_kafka(gw, sdk, broker)
            status, why = gw.readyz()
            assert status == 200 and "absorbing" in why, (status, why)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the deliberate outage
            spooled = spool_records(gw)
            broker.start()
            back_at = time.monotonic()
            rate = drain_and_measure(gw, back_at)
            totals = bench.join()
            sdk.stop()
            assert sdk.clients.sent.refused_exports == 0, "an SDK export was refused"
            assert not totals.errors and totals.rejected_items == 0, totals.errors
            wait_for(lambda: spool_records(gw) == 0, within=60, what="the spool empty at the end")
            report = check_delivery(broker, prefix, sdk, totals, crashed=False,
                                    ambiguous=gw.metric("gateway_spool_ambiguous_items_total"))
            report.update(rate, outage_s=round(back_at - down_at, 1), spooled_at_return=spooled,
                          corrupt=gw.metric("gateway_spool_corrupt_records_total"))
            print("\nspool outage figures:", json.dumps(report))
            assert gw.stop() == 0, gw.log()
        finally:
            sdk.stop()
            gw.cleanup()
            broker.cleanup()


def test_gateway_sigkilled_mid_outage_and_restarted_with_other_workers_loses_nothing() -> None:
    """Two workers spool; SIGKILL in the middle of the outage; one worker restarts, adopts the
    other's directory and replays both once Kafka is back."""
    broker = PrivateKafka().start()
    prefix = unique_prefix("spoolkill")
    with spool_dir() as sdir:
        gw = GatewayProcess(spool_env(broker.bootstrap, prefix, sdir), workers=2)
        sdk = SdkStream(gw)
        try:
            bench, down_at = load_then_stop_kafka(gw, sdk, broker)
            time.sleep(max(0.0, OUTAGE_S / 2 - (time.monotonic() - down_at)))  # half the outage
            gw.kill()  # SIGKILL, supervisor and workers: no flush, no ledger, nothing
            dirs = sorted(p.name for p in sdir.iterdir())
            assert dirs == ["worker-0", "worker-1"], dirs
            spooled_files = sum(len(fmt.segments(sdir / d)) for d in dirs)
            assert spooled_files >= 2, "both workers should have spooled"
            gw.args[gw.args.index("--workers") + 1] = "1"
            gw.workers = 1
            gw.start()
            assert gw.metric("gateway_spool_recovered_records_total") > 0
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the rest of the outage
            broker.start()
            back_at = time.monotonic()
            rate = drain_and_measure(gw, back_at)
            totals = bench.join()
            sdk.stop()
            wait_for(lambda: spool_records(gw) == 0, within=60, what="the spool empty at the end")
            report = check_delivery(broker, prefix, sdk, totals, crashed=True,
                                    ambiguous=gw.metric("gateway_spool_ambiguous_items_total"))
            report.update(rate, refused_sdk_exports=sdk.clients.sent.refused_exports,
                          bench_errors=dict(totals.errors),
                          recovered_records=gw.metric("gateway_spool_recovered_records_total"))
            print("\nspool crash figures:", json.dumps(report))
            assert not any(fmt.segments(sdir / d) for d in dirs), "segments left after the replay"
            assert gw.stop() == 0, gw.log()
        finally:
            sdk.stop()
            gw.cleanup()
            broker.cleanup()
