"""The Prometheus sink is a PreparingSink: the pipeline converts the next batch while it writes."""

from __future__ import annotations

import asyncio

from pipelines.sinks.base import PreparingSink
from pipelines.sinks.prometheus import PrometheusSink
from settings.config import PrometheusSinkConfig


def test_prometheus_sink_splits_conversion_from_the_store_round_trip() -> None:
    sink = PrometheusSink(PrometheusSinkConfig())
    assert isinstance(sink, PreparingSink)
    prepared = asyncio.run(sink.prepare([]))
    assert prepared.records == [] and not prepared.conv.requests
