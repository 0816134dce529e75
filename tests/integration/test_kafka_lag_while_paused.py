"""``pipeline_consumer_lag`` keeps counting while the sink is down: a paused consumer fetches
nothing, so the lag comes from the brokers' end offsets, not from what the last fetch saw."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from bus.contract import Batch, BusRecord
from bus.kafka.consumer import KafkaSource
from bus.kafka.producer import KafkaBus
from otlp.signals import Signal
from pipelines.pipeline import Pipeline
from pipelines.sinks.base import TransientSinkError
from tests import otlp_payloads, stackenv
from tests.integration.kafka_read import unique_kafka_config
from tests.waiting import await_for

pytestmark = pytest.mark.integration


class _DownStore:
    """A sink whose store is down: every write is a transient failure."""

    name = "down"
    signals = frozenset({Signal.LOGS})

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(self, records: Sequence[BusRecord]) -> None:
        raise TransientSinkError("store is down")


async def test_lag_grows_while_the_sink_is_down() -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("lagpaused", partitions=1)
    topic = Signal.LOGS.topic(cfg.topic_prefix)
    payload = otlp_payloads.payload(Signal.LOGS, records=1)
    bus = KafkaBus(cfg)
    await bus.start()
    source = KafkaSource(cfg, cfg.topic_prefix + "group", [Signal.LOGS], max_records=1)
    pipeline = Pipeline(source, _DownStore(), max_records=1, backoff_initial_s=0.05, backoff_max_s=0.2)
    try:
        await bus.publish(Batch(Signal.LOGS, "t", payload, 1, ["c0"]))
        await source.start()
        task = asyncio.create_task(pipeline.run())

        def lag() -> float:
            labels = {"topic": topic, "partition": "0"}
            return REGISTRY.get_sample_value("pipeline_consumer_lag", labels) or 0.0

        async def paused() -> bool:
            return bool(source.consumer.paused())
        await await_for(paused, within=30, what="the pipeline to pause on the failing sink")
        for i in range(1, 21):  # twenty more records arrive while the store is down
            await bus.publish(Batch(Signal.LOGS, "t", payload, 1, [f"c{i}"]))

        async def grown() -> bool:
            return lag() >= 20
        await await_for(grown, within=30, what="the lag to count the records that arrived meanwhile")
        pipeline.stop()
        await asyncio.wait_for(task, 30)
    finally:
        await source.stop()
        await bus.stop()
