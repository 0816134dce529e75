"""Every sink module builds its own sink from the config, so the runner needs no special cases."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from pipelines.runner import make_sink
from pipelines.sinks import SINKS
from pipelines.sinks.file import FileSink
from settings.config import Config


@pytest.mark.parametrize("name", SINKS)
def test_every_sink_module_has_make_sink(name: str) -> None:
    assert callable(getattr(importlib.import_module(f"pipelines.sinks.{name}"), "make_sink", None))


def test_file_sink_writes_per_process_files_under_the_configured_dir(tmp_path: Path) -> None:
    cfg = Config()
    cfg.pipelines.file.data_dir = str(tmp_path)
    sink = make_sink(cfg, "file")
    assert isinstance(sink, FileSink)
    # several workers may feed one data dir: one file per process keeps lines whole
    assert sink.path("acme", next(iter(sink.signals))).parent == tmp_path / "acme"
    assert sink.path("acme", next(iter(sink.signals))).stem.endswith(f"-p{os.getpid()}")
