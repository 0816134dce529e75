"""The bench's loss check on the embedded file sink: items counted from the sink's own output in
either format, JSON lines (the default) and ``format: proto`` length-prefixed messages."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bench.systems import SinkCounter
from otlp.proto_json import proto_to_json
from otlp.signals import Signal
from pipelines.sinks.file import FileFormat, FileSink
from tests.otlp_payloads import payload
from tests.unit.test_file_sink import record


@pytest.mark.parametrize("file_format", ["json", "proto"])
async def test_counts_what_the_file_sink_wrote_in_either_format(tmp_path: Path,
                                                                 file_format: FileFormat) -> None:
    sink = FileSink(tmp_path, file_format=file_format)
    await sink.start()
    try:
        await sink.write([record("acme", payload(Signal.TRACES, spans_per_request=3), 0),
                          record("acme", payload(Signal.TRACES, spans_per_request=5), 1),
                          record("beta", payload(Signal.LOGS, records=2), 2, Signal.LOGS)])
    finally:
        await sink.stop()
    ext = ".jsonl" if file_format == "json" else ".binpb"
    assert _names(tmp_path) == [f"logs{ext}", f"traces{ext}"]
    assert SinkCounter(tmp_path, [Signal.TRACES]).poll() == 8
    assert SinkCounter(tmp_path, [Signal.TRACES, Signal.LOGS]).poll() == 10


def _one_record(signal_file: Path, items: int) -> bytes:
    """One record of ``items`` spans as the sink writes it to ``signal_file``: a JSON line, or a
    length-prefixed message."""
    message = payload(Signal.TRACES, spans_per_request=items)
    if signal_file.suffix == ".binpb":
        return struct.pack(">I", len(message)) + message
    return proto_to_json(Signal.TRACES, message) + b"\n"


@pytest.mark.parametrize("name", ["traces.jsonl", "traces.binpb"])
def test_records_are_counted_once_and_only_when_whole(tmp_path: Path, name: str) -> None:
    (tmp_path / "default").mkdir()
    path = tmp_path / "default" / name
    rec = _one_record(path, 4)
    path.write_bytes(rec + rec[:10])  # a record being appended is not delivered yet
    counter = SinkCounter(tmp_path, [Signal.TRACES])
    assert counter.poll() == 4
    with path.open("ab") as f:
        f.write(rec[10:] + rec)
    assert counter.poll() == 12
    assert counter.poll() == 12


def _names(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.glob("*/*"))
