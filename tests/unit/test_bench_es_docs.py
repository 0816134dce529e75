"""Speed of OTLP -> Elasticsearch documents, the stage that bounds an Elasticsearch worker.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_es_docs.py --benchmark-enable --benchmark-only
Items/s per core = items per round / mean (``extra_info["items"]``). The cases split the
conversion a worker does per record: attribute maps alone (10 attributes, the bench's span
shape: 7 strings, 3 ints), whole bulk bodies of 512 spans (decode, documents, JSON, NDJSON),
the same with one span event each (which also becomes a log document), and 512 log records.
Beside them, reading a filtered bulk answer of 5,000 successes: the sink's ``AnswerSerializer``
against the client's default (the standard library's ``json``), ``items`` = 5,000.
"""

from __future__ import annotations

import pytest
from elasticsearch.serializer import CompatibilityModeJsonSerializer
from pytest_benchmark.fixture import BenchmarkFixture

from otlp.signals import Signal
from pipelines.convert.es_docs import bulk_body, bulk_items, document_attributes
from pipelines.sinks.elasticsearch import AnswerSerializer
from tests.otlp_payloads import logs_request, traces_request
from tests.sdk_otlp import bus_record

pytestmark = pytest.mark.benchmark(group="es_docs", min_rounds=20)

ITEMS = 512
_SPANS_REQ = traces_request(spans_per_request=ITEMS, attributes=10)
SPANS = bus_record(Signal.TRACES, _SPANS_REQ.SerializeToString(), "acme", offset=1)
SPANS_WITH_EVENTS = bus_record(
    Signal.TRACES, traces_request(spans_per_request=ITEMS, attributes=10, events=1).SerializeToString(),
    "acme", offset=1)
LOGS = bus_record(Signal.LOGS, logs_request(records=ITEMS, attributes=6).SerializeToString(),
                  "acme", offset=1)
SPAN_ATTRIBUTES = [s.attributes for s in _SPANS_REQ.resource_spans[0].scope_spans[0].spans]


def test_bench_es_attributes_512_maps_of_10(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    maps = benchmark(lambda: [document_attributes(a) for a in SPAN_ATTRIBUTES])
    assert len(maps) == ITEMS and all(len(m) == 10 for m in maps)
    assert maps[0]["http.route"] == "/api/v1/orders/{id}" and maps[0]["server.port"] == 8080


def test_bench_es_bulk_body_512_spans(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    body = benchmark(lambda: bulk_body(bulk_items(SPANS)))
    assert body.count(b"\n") == 2 * ITEMS


def test_bench_es_bulk_body_512_spans_with_an_event_each(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    body = benchmark(lambda: bulk_body(bulk_items(SPANS_WITH_EVENTS)))
    assert body.count(b"\n") == 2 * 2 * ITEMS  # a span document and an event's log document each


def test_bench_es_bulk_body_512_logs(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ITEMS
    body = benchmark(lambda: bulk_body(bulk_items(LOGS)))
    assert body.count(b"\n") == 2 * ITEMS


ANSWERS = 5000
# What Elasticsearch answers a bulk of 5,000 new documents under the sink's filter_path.
ANSWER = b'{"errors":false,"items":[' + b",".join([b'{"create":{"status":201}}'] * ANSWERS) + b"]}"


def test_bench_es_bulk_answer_5000_successes_read_by_the_sink(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ANSWERS
    assert benchmark(AnswerSerializer().loads, ANSWER) == {"errors": False}


def test_bench_es_bulk_answer_5000_successes_read_by_the_default(benchmark: BenchmarkFixture) -> None:
    benchmark.extra_info["items"] = ANSWERS
    assert len(benchmark(CompatibilityModeJsonSerializer().loads, ANSWER)["items"]) == ANSWERS
