"""The raw HTTP/1.1 client's response parsing and partial-success accounting, on in-memory streams."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from bench.transports import read_response, rejected_items
from otlp.signals import Signal


async def parse(raw: bytes) -> tuple[int, bytes, bool]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    head = await reader.readuntil(b"\r\n\r\n")
    return await read_response(reader, head)


async def test_content_length_body_and_keep_alive() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 3\r\n\r\nabcEXTRA"
    assert await parse(raw) == (200, b"abc", True)


async def test_chunked_body() -> None:
    raw = (b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\nslow\r\n5;x=1\r\n down\r\n0\r\n\r\n")
    assert await parse(raw) == (429, b"slow down", True)


async def test_connection_close_and_http10_are_not_reused() -> None:
    assert (await parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))[2] is False
    assert (await parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"))[2] is False


def test_partial_success_counts_as_refused_items() -> None:
    resp = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(rejected_spans=7))
    assert rejected_items(Signal.TRACES, resp.SerializeToString()) == 7
    assert rejected_items(Signal.TRACES, b"") == 0
    assert rejected_items(Signal.LOGS, b"{}") == 0  # a JSON body on success refuses nothing
