"""Checks every sink must pass, written once for the three sink test modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from bus.contract import BusRecord
from pipelines.sinks.base import Sink, TransientSinkError
from tests import stackenv
from tests.waiting import await_for


async def assert_write_is_transient(sink: Sink, records: Sequence[BusRecord]) -> None:
    """Start (which must not raise), write (which must raise TransientSinkError), stop."""
    await sink.start()
    try:
        with pytest.raises(TransientSinkError):
            await sink.write(records)
    finally:
        await sink.stop()


async def jaeger_trace(trace_id: str, spans: int) -> dict[str, Any]:
    """The trace from Jaeger's query API once it holds ``spans`` spans."""
    async def check() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as http, \
                http.get(f"{stackenv.JAEGER_QUERY_URL}/api/traces/{trace_id}") as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
        data = body.get("data") or []
        return data[0] if data and len(data[0]["spans"]) >= spans else None
    return await await_for(check, within=20, interval=0.2, what=f"trace {trace_id} with {spans} spans")
