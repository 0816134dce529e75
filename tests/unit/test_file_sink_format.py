"""File sink ``format: proto``: each record's protobuf bytes after a 4-byte big-endian length, as
the Collector's file exporter writes them; JSON lines stay the default."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp.signals import Signal
from pipelines.sinks.file import FileSink, make_sink, read_frames
from settings.config import ConfigError, load
from tests.otlp_payloads import payload
from tests.unit.test_file_sink import record, spans


def test_format_is_json_unless_set_to_proto() -> None:
    assert load(env={}).pipelines.file.format == "json"
    assert load(env={"TG_PIPELINES__FILE__FORMAT": "proto"}).pipelines.file.format == "proto"
    with pytest.raises(ConfigError, match="format"):
        load(env={"TG_PIPELINES__FILE__FORMAT": "xml"})


@pytest.mark.parametrize("offload", [False, True], ids=["in-process", "offload"])
async def test_proto_format_appends_each_record_after_its_length(tmp_path: Path, offload: bool) -> None:
    sink = FileSink(tmp_path, offload=offload, file_format="proto")
    values = [payload(Signal.TRACES, spans_per_request=3), spans("a"), payload(Signal.LOGS, records=2)]
    bad_utf8 = spans("x").replace(b"x", b"\xff")  # nothing converts, so nothing is refused either
    await sink.start()
    try:
        await sink.write([record("acme", values[0], 0), record("acme", values[1], 1),
                          record("acme", values[2], 2, Signal.LOGS), record("acme", bad_utf8, 3)])
    finally:
        await sink.stop()
    traces = tmp_path / "acme" / "traces.binpb"
    assert sink.path("acme", Signal.TRACES) == traces
    assert list(read_frames(traces)) == [values[0], values[1], bad_utf8]
    assert list(read_frames(tmp_path / "acme" / "logs.binpb")) == [values[2]]
    assert traces.read_bytes()[:4] == struct.pack(">I", len(values[0]))
    assert not (tmp_path / "acme" / "traces.jsonl").exists()
    assert not (tmp_path / "acme" / "rejected").exists()
    assert ExportTraceServiceRequest.FromString(next(read_frames(traces))).resource_spans


def test_a_message_not_yet_whole_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "traces.binpb"
    path.write_bytes(struct.pack(">I", 3) + b"abc" + struct.pack(">I", 5) + b"de")
    assert list(read_frames(path)) == [b"abc"]


def test_the_pipelines_command_takes_the_format_from_config(tmp_path: Path) -> None:
    cfg = load(env={"TG_PIPELINES__FILE__FORMAT": "proto", "TG_PIPELINES__FILE__DATA_DIR": str(tmp_path)})
    sink = make_sink(cfg)
    assert sink.path("t", Signal.LOGS).name.endswith(".binpb")
