"""The producer's idle health check asks the broker for this gateway's topics only.

Asking for every topic of a shared cluster made aiokafka decode thousands of topics' metadata on
the event loop once per ``health_check_interval_ms``, which stalled every request for 70-135 ms
(the bench's open-loop p99 showed a spike every 5 s)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.kafka.producer import KafkaBus
from otlp.signals import Signal
from tests import stackenv
from tests.integration.kafka_read import unique_kafka_config
from tests.waiting import await_for

pytestmark = pytest.mark.integration


async def test_health_check_fetches_only_the_gateways_topics() -> None:
    stackenv.require("kafka")
    cfg = unique_kafka_config("probe", health_check_interval_ms=100)
    other = f"{cfg.topic_prefix}someone_elses_topic"
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    ours = {s.topic(cfg.topic_prefix) for s in Signal}
    bus = KafkaBus(cfg)
    await bus.start()
    try:
        async def known_topics() -> set[str] | None:
            producer = bus._producer
            if producer is None:
                return None
            # Bootstrap learns every topic once; after a probe the client holds only what it asked for.
            topics = set(producer.client.cluster.topics())
            return topics if topics == ours else None

        found = await await_for(known_topics, within=15, what="a health check asking for our topics only")
        assert found == ours
        assert bus.readiness()[0]
    finally:
        await bus.stop()
