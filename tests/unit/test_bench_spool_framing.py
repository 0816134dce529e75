"""Cost of the spool's record framing per MiB: format 2 (CRC-32C, what is written) beside format 1
(zlib CRC-32, framed the way the version before CRC-32C did), encoding and parsing.

Run with figures:
    .venv/bin/pytest tests/unit/test_bench_spool_framing.py --benchmark-enable --benchmark-only
Each round frames or parses one record of a 1 MiB payload (the default ``batch.max_bytes``), so
the mean is the cost per MiB.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bus.contract import Batch
from bus.spool import log as fmt
from otlp.signals import Signal
from tests import spool_format1 as format1

pytestmark = pytest.mark.benchmark(group="spool-framing", min_rounds=50)

BATCH = Batch(Signal.TRACES, "tenant-a", bytes(range(256)) * 4096, 2048, ["c1", "c2"])
ENCODERS: dict[str, Callable[[int, Batch, int], bytes]] = {"format2_crc32c": fmt.encode,
                                                           "format1_crc32": format1.frame}


@pytest.mark.parametrize("version", list(ENCODERS))
def test_bench_encode_1_mib(benchmark: BenchmarkFixture, version: str) -> None:
    frame = benchmark(ENCODERS[version], 1, BATCH, 1000)
    assert len(frame) == fmt.HEADER.size + fmt.BODY.size + len("tenant-a") + len("c1,c2") + len(BATCH.payload)


@pytest.mark.parametrize("version", list(ENCODERS))
def test_bench_parse_1_mib(benchmark: BenchmarkFixture, version: str) -> None:
    frame = ENCODERS[version](1, BATCH, 1000)
    found = benchmark(lambda: list(fmt.parse(frame)))
    ((_, rec),) = found
    assert isinstance(rec, fmt.Record) and rec.batch == BATCH
