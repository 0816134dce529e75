"""``pipeline_file_sink_json_fallback_records_total``: records the C OTLP/JSON writer hands back to
the Python reference converter are counted once each, by signal, in the sink's own process."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from otlp.proto_json import fast_proto_to_json
from otlp.signals import Signal
from pipelines.sinks.file import FileSink, complete_lines
from tests.otlp_payloads import payload
from tests.unit.test_file_sink import record, spans, spans_for_the_helper

_METRIC = "pipeline_file_sink_json_fallback_records_total"


def _fallbacks(signal: Signal) -> float:
    return REGISTRY.get_sample_value(_METRIC, {"signal": signal.value}) or 0.0


def _span_names(path: Path) -> list[str]:
    return [span["name"] for line in complete_lines(path)
            for rs in orjson.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def test_the_helper_input_is_one_the_c_writer_hands_back() -> None:
    assert fast_proto_to_json(Signal.TRACES, spans_for_the_helper("a")) is None
    assert fast_proto_to_json(Signal.TRACES, spans("a")) is not None


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "helper-process"])
async def test_each_record_taking_the_reference_moves_the_counter_once(tmp_path: Path, offload: bool) -> None:
    sink = FileSink(tmp_path, offload=offload)
    traces, logs = _fallbacks(Signal.TRACES), _fallbacks(Signal.LOGS)
    await sink.start()
    try:
        await sink.write([record("acme", spans("a"), 0), record("acme", spans_for_the_helper("b"), 1),
                          record("acme", payload(Signal.LOGS, records=2), 2, Signal.LOGS),
                          record("acme", spans_for_the_helper("c"), 3)])
    finally:
        await sink.stop()
    assert _fallbacks(Signal.TRACES) - traces == 2
    assert _fallbacks(Signal.LOGS) == logs  # C wrote it: not counted
    assert _span_names(sink.path("acme", Signal.TRACES)) == ["a", "b", "c"]
