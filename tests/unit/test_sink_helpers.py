"""The pure parts of the sinks: request grouping, template bodies, drop reasons."""

from __future__ import annotations

from otlp.signals import Signal
from pipelines.convert.es_docs import BulkItem
from pipelines.sinks.elasticsearch import ElasticsearchSink, index_template
from pipelines.sinks.jaeger import join_records
from pipelines.sinks.prometheus import drop_reason, sample_refusal
from settings.config import ElasticsearchSinkConfig
from tests.sdk_otlp import bus_record


def test_jaeger_joins_consecutive_records_under_the_byte_limit() -> None:
    sizes = [40, 50, 20, 200, 10]
    recs = [bus_record(Signal.TRACES, b"x" * n, "acme", offset=i) for i, n in enumerate(sizes)]
    groups = join_records(recs, max_bytes=100)
    assert [[r.offset for r in g] for g in groups] == [[0, 1], [2], [3], [4]]
    assert join_records([], 100) == []


def test_remote_write_drop_reasons_are_bounded() -> None:
    assert drop_reason(400, "out of order sample") == "out_of_order"
    assert drop_reason(400, "duplicate sample for timestamp") == "duplicate"
    assert drop_reason(400, "too old sample") == "too_old"
    assert drop_reason(400, "out of bounds") == "out_of_bounds"
    assert drop_reason(413, "whatever the body says") == "http_413"
    assert sample_refusal("too old sample") == "too_old"  # Prometheus 2.42 sends this as a 500
    assert sample_refusal("upstream connect error") is None


def test_es_templates_declare_data_streams_and_otel_mappings() -> None:
    t = index_template(Signal.TRACES, data_streams=True)
    assert t["index_patterns"] == ["traces-generic.otel-*"] and t["data_stream"] == {}
    # Below Elastic's own OTel templates (traces-*.otel-*, 120), above the generic traces-*-* (100).
    assert t["priority"] == 110
    props = t["template"]["mappings"]["properties"]
    assert props["@timestamp"] == {"type": "date_nanos"}
    flattened = {"type": "flattened", "ignore_above": 4096, "depth_limit": 32}
    assert props["attributes"] == flattened
    assert props["resource"]["properties"]["attributes"] == flattened
    assert props["events"]["properties"]["attributes"] == flattened
    logs = index_template(Signal.LOGS, data_streams=False)
    assert "data_stream" not in logs and logs["index_patterns"] == ["logs-generic.otel-*"]
    lprops = logs["template"]["mappings"]["properties"]
    assert lprops["attributes"] == flattened
    assert lprops["body"]["properties"]["structured"] == flattened
    assert lprops["observed_timestamp"] == {"type": "date_nanos"}


def _keywords(mapping: object) -> list[dict[str, object]]:
    if isinstance(mapping, dict):
        found = [mapping] if mapping.get("type") == "keyword" else []
        return found + [k for v in mapping.values() for k in _keywords(v)]
    if isinstance(mapping, list):
        return [k for v in mapping for k in _keywords(v)]
    return []


def test_every_es_keyword_sets_a_term_size_aside() -> None:
    """Lucene refuses terms over 32766 bytes: every keyword, declared or dynamic, has ignore_above."""
    for signal in (Signal.TRACES, Signal.LOGS):
        keywords = _keywords(index_template(signal, data_streams=True)["template"]["mappings"])
        assert len(keywords) > 5
        assert all(int(str(k["ignore_above"])) * 4 <= 32766 for k in keywords)


def test_es_bulk_chunks_respect_count_and_bytes() -> None:
    sink = ElasticsearchSink(ElasticsearchSinkConfig(bulk_max_docs=3, bulk_max_bytes=1000))
    items = [BulkItem("i", str(n), b"x" * 100) for n in range(7)]
    assert sink._chunks(items) == [(0, 3), (3, 6), (6, 7)]
    big = [BulkItem("i", str(n), b"x" * 600) for n in range(3)]
    assert sink._chunks(big) == [(0, 1), (1, 2), (2, 3)]  # one oversized item still goes alone
    assert sink._chunks([]) == []
