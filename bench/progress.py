"""The live progress line: one ``\\r``-rewritten line: a long run shows it is alive and how it fares."""

from __future__ import annotations

import sys
from typing import TextIO

from bench.loadgen import Tick


class ProgressLine:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._width = 0

    def format(self, tick: Tick) -> str:
        return (f"[{self.label}] {tick.elapsed_s:5.1f}s {tick.phase:<7} "
                f"{tick.items_per_s:>10,.0f} items/s  p99 {tick.p99_ms:8.1f} ms  errors {tick.errors}")

    def update(self, tick: Tick) -> None:
        self._write("\r" + self.format(tick))

    def note(self, text: str) -> None:
        self._write(f"\r[{self.label}] {text}")

    def finish(self, summary: str) -> None:
        self._write(f"\r[{self.label}] {summary}")
        self.stream.write("\n")
        self.stream.flush()
        self._width = 0

    def _write(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write(line + " " * pad)
        self.stream.flush()
        self._width = len(line)
