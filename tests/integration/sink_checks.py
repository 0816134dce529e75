"""Checks every sink must pass, written once for the three sink test modules."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bus.contract import BusRecord
from pipelines.sinks.base import Sink, TransientSinkError


async def assert_write_is_transient(sink: Sink, records: Sequence[BusRecord]) -> None:
    """Start (which must not raise), write (which must raise TransientSinkError), stop."""
    await sink.start()
    try:
        with pytest.raises(TransientSinkError):
            await sink.write(records)
    finally:
        await sink.stop()
