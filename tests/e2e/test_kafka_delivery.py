"""SDK exporters -> gateway (bus: kafka, ack: durable) -> Kafka -> pipelines worker -> file sink.

Every item the gateway acknowledged must arrive, with its tenant and the correlation id of the
request that brought it, also when the pipelines worker is SIGKILLed mid-stream and restarted.

Duplicates: a SIGKILLed worker may have written records to the file sink without committing
their offsets; its successor reads them again (at-least-once). The file sink is not idempotent,
so such records appear twice. They are counted, and bounded: at most the batch in hand when the
worker died (``pipelines.max_inflight_records`` records of each signal), never more.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from otlp.signals import Signal
from tests import stackenv
from tests.e2e.kafka_pipeline import (
    Clients,
    PipelineProcess,
    in_kafka,
    kafka_env,
    missing,
    received,
    running_pipeline,
    unique_prefix,
)
from tests.gateway_process import running_gateway
from tests.integration.kafka_read import read_topic
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

ROUNDS = 4  # each round: one export per signal per transport (20 spans, 20 logs, 10 points each)


def topic_records(bootstrap: str, prefix: str) -> dict[Signal, int]:
    """signal -> how many records its topic holds."""
    return {signal: len(asyncio.run(read_topic(bootstrap, signal.topic(prefix)))) for signal in Signal}


def test_every_acknowledged_item_arrives_with_tenant_and_correlation_id() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("delivery")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix)
    with running_gateway(env) as gw, running_pipeline(env) as pipeline:
        clients = Clients(gw)
        for _ in range(ROUNDS):
            clients.round()
        assert clients.sent.refused_exports == 0
        assert len(clients.sent.spans) == ROUNDS * 40
        wait_for(lambda: missing(clients.sent, received(pipeline)) == 0, within=60,
                 what="every acknowledged item in the file sink")
        got = received(pipeline)
        # No crash, no rebalance: each item exactly once.
        for signal_name in ("traces", "logs", "metrics"):
            dups = {k: n for k, n in got[signal_name].items() if n > 1}
            assert not dups, f"{signal_name} duplicated without a crash: {list(dups)[:5]}"
        assert sum(got["traces"].values()) == len(clients.sent.spans)
        assert sum(got["logs"].values()) == len(clients.sent.logs)
        assert sum(got["metrics"].values()) == len(clients.sent.points)
        # The worker's own metrics: acked records and a lag of 0 on every partition it owns.
        metrics = pipeline.metrics()
        acked = sum(v for (name, labels), v in metrics.items()
                    if name == "pipeline_sink_acked_records_total" and ("sink", "file") in labels)
        # partition_by: spread turns one export into up to one record per partition (a trace
        # export) or keeps it whole (logs, metrics): the worker acked every record in the topics,
        # no more, and the topics themselves hold each acknowledged item exactly once.
        records = topic_records(stackenv.KAFKA_BOOTSTRAP, prefix)
        assert acked == sum(records.values()), (acked, records)
        stored = in_kafka(stackenv.KAFKA_BOOTSTRAP, prefix)
        for signal_name, sent in (("traces", clients.sent.spans), ("logs", clients.sent.logs),
                                  ("metrics", clients.sent.points)):
            assert sorted(stored[signal_name].values()) == [1] * len(sent), signal_name
        lags = [v for (name, _), v in metrics.items() if name == "pipeline_consumer_lag"]
        assert lags and all(v == 0 for v in lags), lags


def test_nothing_lost_when_the_worker_is_killed_mid_stream() -> None:
    stackenv.require("kafka")
    prefix = unique_prefix("sigkill")
    env = kafka_env(stackenv.KAFKA_BOOTSTRAP, prefix, TG_PIPELINES__MAX_INFLIGHT_RECORDS="5")
    pipeline = PipelineProcess(env)
    try:
        with running_gateway(env) as gw:
            pipeline.start()
            clients = Clients(gw)
            # Traffic keeps flowing in a thread while the worker is killed and restarted.
            with ThreadPoolExecutor(max_workers=1) as pool:
                sending = pool.submit(clients.rounds, 2 * ROUNDS)
                wait_for(lambda: sum(sum(c.values()) for c in received(pipeline).values()) > 0,
                         within=60, what="the worker to write something before it is killed")
                pipeline.kill()
                killed_at = len(clients.sent.spans)
                sending.result(timeout=120)
            assert killed_at < len(clients.sent.spans), "the kill must land mid-stream"
            assert clients.sent.refused_exports == 0
            pipeline.start()
            wait_for(lambda: missing(clients.sent, received(pipeline)) == 0, within=90,
                     what="every acknowledged item after the restart")
            assert pipeline.stop() == 0, pipeline.log()
        got = received(pipeline)
        for signal_name, sent in (("traces", clients.sent.spans), ("logs", clients.sent.logs),
                                  ("metrics", clients.sent.points)):
            total = sum(got[signal_name].values())
            duplicates = total - len(got[signal_name])
            unexpected = {k[0] for k in got[signal_name]} - set(sent)
            assert not unexpected, f"{signal_name}: items nobody acknowledged: {sorted(unexpected)[:5]}"
            # Redelivered = written by the killed worker but not committed: at most the records in
            # hand (5 records, each one export of <= 20 items) per signal.
            assert duplicates <= 5 * 20, f"{signal_name}: {duplicates} duplicates is more than one batch"
            print(f"{signal_name}: {len(sent)} acknowledged, {total} written, {duplicates} redelivered")
    finally:
        pipeline.cleanup()
