"""Which template maps our streams, asked of the real node with the simulate-index API.

The stack's node has none of Elastic's OTel templates, and installing one would take over every
other test's streams, so Elastic's are given in the request body: the node resolves the index as
if they were installed, beside the templates that are (ours, from the sink's start).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from otlp.signals import Signal
from pipelines.convert.es_docs import index_name
from pipelines.sinks.elasticsearch import ElasticsearchSink, template_name
from tests.integration import test_sink_elasticsearch as base

pytestmark = pytest.mark.integration

sink = base.sink  # started: our templates are installed


def _elastic_otel_template(pattern: str, priority: int) -> dict[str, Any]:
    """The shape of Elasticsearch's ``traces-otel@template`` / ``logs-otel@template`` (x-pack
    otel-data: ``<type>-*.otel-*`` at 120) or of the stack's ``<type>-*-*`` (100), with a field
    that marks it."""
    return {"index_patterns": [pattern], "priority": priority, "data_stream": {},
            "template": {"mappings": {"properties": {"marked_by_elastic": {"type": "keyword"}}}}}


async def _resolved(sink: ElasticsearchSink, index: str, body: dict[str, Any] | None) -> dict[str, Any]:
    resp = await sink.client.perform_request(
        "POST", f"/_index_template/_simulate_index/{index}",
        headers={"accept": "application/json", "content-type": "application/json"}, body=body)
    return dict(resp.body)


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS])
async def test_elastic_otel_templates_win_and_ours_serve_where_they_are_absent(
        sink: ElasticsearchSink, signal: Signal) -> None:
    index = index_name(signal, f"it-priority-{uuid.uuid4().hex[:8]}")
    kind = "traces" if signal is Signal.TRACES else "logs"

    ours = await _resolved(sink, index, None)
    assert ours["template"]["mappings"]["properties"]["attributes"]["type"] == "flattened"

    elastic = await _resolved(sink, index, _elastic_otel_template(f"{kind}-*.otel-*", 120))
    props = elastic["template"]["mappings"]["properties"]
    assert "marked_by_elastic" in props and "attributes" not in props
    assert template_name(signal) in [t["name"] for t in elastic["overlapping"]]

    generic = await _resolved(sink, index, _elastic_otel_template(f"{kind}-*-*", 100))
    props = generic["template"]["mappings"]["properties"]
    assert props["attributes"]["type"] == "flattened" and "marked_by_elastic" not in props
