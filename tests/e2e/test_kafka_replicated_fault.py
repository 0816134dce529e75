"""A broker SIGKILLed on a replicated cluster: nothing acknowledged is lost, and OKs keep coming.

"Nothing is acknowledged that is not durable" (docs/architecture.md) means an OK survives a broker crash.
On one broker that cannot be shown, since killing it stops everything; on three brokers with
replication factor 3 and ``min.insync.replicas`` 2 it can: acks=all then answers only once two
brokers hold the data, so losing any one loses nothing, and the two left in sync are enough for
Kafka, and so for the gateway, to keep acknowledging while the third is down. This test runs
that layout privately (``PrivateKafka(brokers=3)``: the stack's ``--kafka-brokers 3`` nodes on
free ports), so killing a broker disturbs no other test, and the gateway creates the topics
with ``bus.kafka.replication_factor`` / ``min_insync_replicas`` as a user of a real cluster would.

The broker killed is the one leading the most partitions of the spans topic; spans are keyed by
trace id, so every export has spans on every partition and meets the lost leader. Until the
controller fences the dead broker (its session times out, about 10 s) publishes to its
partitions wait; the gateway refuses those it cannot finish within ``publish_timeout_ms``,
retryably, and the SDK exporters retry them. A refused publish may have reached the followers
all the same, so its retry stores the same items again: such duplicates are counted in Kafka
and must not exceed the items the gateway refused. Reading a record twice (a redelivery) is
allowed only if the pipelines worker had to rejoin its group, and is counted apart.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka.errors import KafkaError

from otlp.signals import Signal
from tests.e2e.kafka_pipeline import (
    Clients,
    PipelineProcess,
    in_kafka,
    kafka_env,
    missing,
    received,
    unique_prefix,
)
from tests.e2e.private_kafka import TOPIC_CONFIG_SOURCE, PartitionState, PrivateKafka
from tests.gateway_process import GatewayProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# The stream is bounded whatever happens; the test ends it far sooner (after about 50 rounds).
MAX_ROUNDS = 600
# Acknowledged before the kill, so the victim led partitions holding acknowledged data.
ROUNDS_BEFORE_KILL = 5
# A full round (each signal over each transport) acknowledged while one broker is down.
EXPORTS_PER_ROUND = 6
RETRYABLE = {"bus_unavailable", "overloaded"}


def _stream(clients: Clients, stop: threading.Event) -> int:
    rounds = 0
    while not stop.is_set() and rounds < MAX_ROUNDS:
        clients.round()
        rounds += 1
    return rounds


def _acked_since(clients: Clients, since: float, until: float = float("inf")) -> int:
    return sum(1 for e in list(clients.sent.exports) if e.ok and since <= e.started and e.ended < until)


def _in_sync(parts: list[PartitionState], without: int | None = None) -> bool:
    """Every partition led by a live broker, with all its replicas but ``without`` in sync."""
    return all(p.leader not in (without, -1) and p.isr == p.replicas - {without} for p in parts)


def _settled(cluster: PrivateKafka, topics: list[str], without: int | None = None) -> bool:
    """``_in_sync`` as the cluster says now; a cluster in failover may not answer, then ask again."""
    try:
        parts = cluster.partitions(topics)
    except (KafkaError, OSError, TimeoutError):
        return False
    return len(parts) == 3 * len(topics) and _in_sync(parts, without)


def test_broker_killed_on_replicated_cluster_loses_nothing_and_gateway_keeps_acknowledging() -> None:
    began = time.monotonic()
    cluster = PrivateKafka(brokers=3)
    prefix = unique_prefix("replicated")
    topics = [s.topic(prefix) for s in Signal]
    spans_topic = Signal.TRACES.topic(prefix)
    env = kafka_env(cluster.bootstrap, prefix, TG_BUS__KAFKA__REPLICATION_FACTOR="3",
                    TG_BUS__KAFKA__MIN_INSYNC_REPLICAS="2", TG_BUS__KAFKA__PARTITION_BY="trace_id")
    gw = GatewayProcess(env)
    pipeline = PipelineProcess(env)
    try:
        cluster.start()
        gw.start()
        pipeline.start()

        # 1. The gateway made its topics replicated: 3 replicas in sync everywhere, and
        # min.insync.replicas 2 set on each topic, not inherited from the brokers' defaults.
        layout = cluster.partitions(topics)
        assert len(layout) == 3 * len(topics) and all(len(p.replicas) == 3 for p in layout), layout
        assert _in_sync(layout), layout
        for topic in topics:
            assert cluster.topic_config(topic, "min.insync.replicas") == ("2", TOPIC_CONFIG_SOURCE)

        clients = Clients(gw, timeout_s=60)
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1) as pool:
            sending = pool.submit(_stream, clients, stop)
            try:
                wait_for(lambda: len(clients.sent.spans) >= ROUNDS_BEFORE_KILL * 40
                         and sum(received(pipeline)["traces"].values()) > 0, within=60,
                         what="spans acknowledged and at the sink before the kill")

                # 2. SIGKILL the broker leading the most spans partitions, mid-stream (on a tie,
                # Kafka spreads 3 partitions over 3 brokers, the lowest node id).
                leads = Counter(p.leader for p in layout if p.topic == spans_topic)
                victim = max(sorted(leads), key=lambda node: leads[node])
                acked_before_kill = len(clients.sent.spans)
                cluster.kill(victim)
                killed_at = time.monotonic()

                # 3. Once the controller fenced it, every partition is led by one of the two left,
                # with exactly those two in sync: Kafka runs on min.insync.replicas, and the
                # gateway must keep acknowledging.
                wait_for(lambda: _settled(cluster, topics, without=victim), within=60, interval=0.5,
                         what=f"leaders moved off node {victim} and every ISR down to the other two")
                degraded_at = time.monotonic()
                wait_for(lambda: _acked_since(clients, degraded_at) >= EXPORTS_PER_ROUND, within=60,
                         what=f"{EXPORTS_PER_ROUND} exports acknowledged with node {victim} down")
                assert gw.proc is not None and gw.proc.poll() is None, f"gateway died:\n{gw.log()}"

                # 4. The broker comes back, catches up and rejoins every ISR; the stream goes on.
                restarted_at = time.monotonic()
                cluster.spawn(victim)
                cluster.wait_ready(node_id=victim)
                wait_for(lambda: _settled(cluster, topics), within=90, interval=0.5,
                         what=f"node {victim} back in sync on every partition")
                healed_at = time.monotonic()
                wait_for(lambda: _acked_since(clients, healed_at) >= EXPORTS_PER_ROUND, within=60,
                         what="exports acknowledged after the broker rejoined")
            finally:
                stop.set()
            rounds = sending.result(timeout=120)
        assert rounds < MAX_ROUNDS, "the stream ran out before the test ended it"
        assert acked_before_kill < len(clients.sent.spans), "the kill must land mid-stream"
        acked_while_down = _acked_since(clients, degraded_at, until=restarted_at)
        assert acked_while_down >= EXPORTS_PER_ROUND, acked_while_down

        # 5. Clients saw at most retryable refusals (the SDK retried each to success), and the
        # gateway stayed up throughout.
        assert clients.sent.refused_exports == 0, f"{clients.sent.refused_exports} export(s) failed for good"
        refusals = gw.metric_by("gateway_refused_requests_total", "reason")
        assert set(refusals) <= RETRYABLE, f"non-retryable refusals: {refusals}"
        assert gw.proc is not None and gw.proc.poll() is None, f"gateway died:\n{gw.log()}"

        # 6. Every acknowledged item is in Kafka and at the sink with its tenant and correlation
        # id, exactly in count: the extra copies are accounted for below.
        wait_for(lambda: missing(clients.sent, received(pipeline)) == 0, within=90,
                 what="every acknowledged item at the sink")
        refused_items = gw.metric_by("gateway_refused_items_total", "signal")
        assert pipeline.stop() == 0, pipeline.log()
        assert gw.stop() == 0, gw.log()
        got, stored = received(pipeline), in_kafka(cluster.bootstrap, prefix)
        assert missing(clients.sent, stored) == 0, "acknowledged items missing from Kafka itself"
        rejoined = pipeline.log_path.read_text(errors="replace").count("Joined group") > 1
        for signal_name, sent in (("traces", clients.sent.spans), ("logs", clients.sent.logs),
                                  ("metrics", clients.sent.points)):
            unexpected = {k[0] for k in got[signal_name]} - set(sent)
            assert not unexpected, f"{signal_name}: items nobody acknowledged: {sorted(unexpected)[:5]}"
            assert len(got[signal_name]) == len(sent), f"{signal_name}: wrong tenant or correlation id"
            # Stored twice: a publish the gateway refused (so the SDK retried it) had reached
            # the followers all the same. Never more than the items refused.
            republished = sum(stored[signal_name].values()) - len(sent)
            refused = refused_items.get(signal_name, 0.0)
            assert republished <= refused, (f"{signal_name}: {republished} items stored twice, but the "
                                            f"gateway refused only {refused:.0f} that a retry could repeat")
            # Read twice: only a worker that lost its group membership re-reads what it had not
            # committed; this one ran throughout.
            redelivered = sum(got[signal_name].values()) - sum(stored[signal_name].values())
            assert redelivered >= 0 and (redelivered == 0 or rejoined), (
                f"{signal_name}: {redelivered} items redelivered without a rebalance:\n{pipeline.log()}")
            print(f"{signal_name}: {len(sent)} acknowledged; {republished} stored twice after "
                  f"{refused:.0f} refused and retried; {redelivered} redelivered")
        print(f"node {victim} (leader of {leads[victim]} of 3 spans partitions) killed for "
              f"{restarted_at - killed_at:.1f}s; {acked_while_down} exports acknowledged on 2 of 3 replicas; "
              f"{rounds} rounds; {time.monotonic() - began:.0f}s in all")
    finally:
        pipeline.cleanup()
        gw.cleanup()
        cluster.cleanup()
