"""The decoder table (``compression``) and the encoding objects (``encodings``), and OTLP/HTTP
driven by both: every Content-Encoding row with bodies written by the real encoders (zlib,
``cramjam``, ``backports.zstd``), at and past its limits, broken in the ways each format can be.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable

import cramjam
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from bus.memory import MemoryBus
from gateway.receivers import compression, encodings
from gateway.receivers.compression import (
    DECODERS,
    BadEncoding,
    Limits,
    TooLarge,
    TooManyMembers,
    decode,
    decode_async,
)
from gateway.receivers.httpserver import Request
from gateway.receivers.otlp_http import OtlpHttp
from otlp import json_mapping
from otlp.signals import Signal
from tests.otlp_payloads import payload
from tests.unit.test_receiver_http import otlp_http

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


def _zstd(data: bytes) -> bytes:
    return bytes(cramjam.zstd.compress(data))


def _snappy_block(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _snappy_framed(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress(data))


# Content-Encoding -> an encoder a client would use for it.
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zlib": zlib.compress,
    "zstd": _zstd,
    "snappy": _snappy_block,
    "x-snappy-framed": _snappy_framed,
}
ALSO = {  # other ways of writing the same name that the row accepts
    "deflate (raw)": ("deflate", lambda d: zlib.compress(d, wbits=-15)),
    "snappy (framed)": ("snappy", _snappy_framed),
    "zstd (two frames)": ("zstd", lambda d: _zstd(d[:len(d) // 2]) + zstd.compress(d[len(d) // 2:])),
}
ALL = {**{name: (name, enc) for name, enc in ENCODERS.items()}, **ALSO}


@pytest.mark.parametrize("case", list(ALL))
def test_roundtrip_and_exact_limit(case: str) -> None:
    name, enc = ALL[case]
    data = os.urandom(2000) + b"otlp" * 20_000
    assert decode(DECODERS[name], enc(data), Limits(len(data))) == data
    with pytest.raises(TooLarge, match=f"exceeds {len(data) - 1} bytes"):
        decode(DECODERS[name], enc(data), Limits(len(data) - 1))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_empty_body_is_an_empty_request(name: str) -> None:
    assert decode(DECODERS[name], b"", Limits(10)) == b""


@pytest.mark.parametrize("name", list(ENCODERS))
def test_bomb_stops_at_the_cap_and_at_the_ratio_fast(name: str) -> None:
    bomb = ENCODERS[name](b"\0" * (64 << 20))
    ratio = 10 if "snappy" in name else 200  # snappy shrinks zeros about 21 times at most
    for limits, words in ((Limits(32 << 20), "exceeds 33554432"), (Limits(32 << 20, ratio), "ratio")):
        started = time.perf_counter()
        with pytest.raises(TooLarge, match=words):
            decode(DECODERS[name], bomb, limits)
        took = time.perf_counter() - started
        assert took < 0.5, f"{name}: {len(bomb)} B refused after {took * 1e3:.0f} ms"


@pytest.mark.parametrize("name", ["snappy", "x-snappy-framed"])
def test_snappy_stated_length_over_the_cap_is_refused_before_decoding(name: str) -> None:
    data = b"x" * 100_000
    if name == "snappy":  # the block's varint says 4 GiB - 1; the rest is not even valid
        body = b"\xff\xff\xff\xff\x0f" + b"\0" * 10
    else:  # 600 compressed chunks of 64 KiB each, stated; only the first is real
        chunk = _snappy_framed(data[:65536])[10:]
        body = compression.SNAPPY_STREAM_ID + chunk * 600
    started = time.perf_counter()
    with pytest.raises(TooLarge):
        decode(DECODERS[name], body, Limits(32 << 20))
    assert time.perf_counter() - started < 0.1


def _truncated(name: str) -> bytes:
    return ENCODERS[name](os.urandom(3000) * 3)[:-7]


@pytest.mark.parametrize("name", list(ENCODERS))
def test_truncated_or_not_in_the_encoding_is_bad(name: str) -> None:
    for body in (_truncated(name), b"this is not compressed at all, in any format"):
        with pytest.raises(BadEncoding):
            decode(DECODERS[name], body, Limits(1 << 20))


def test_trailing_bytes() -> None:
    with pytest.raises(BadEncoding, match="trailing bytes"):
        decode(DECODERS["deflate"], zlib.compress(b"abc") + b"x", Limits(100))
    with pytest.raises(BadEncoding):
        decode(DECODERS["zstd"], _zstd(b"abc") + b"\0\0", Limits(100))
    # a zstd skippable frame is a frame, and skipped
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    assert decode(DECODERS["zstd"], skippable + _zstd(b"abc"), Limits(100)) == b"abc"


def test_many_empty_zstd_frames_are_refused_fast() -> None:
    empty = zstd.compress(b"")
    body = empty * (8 * 1024 * 1024 // len(empty))  # ~900,000 frames in 8 MiB
    started = time.perf_counter()
    with pytest.raises(TooManyMembers, match="1024 zstd frames"):
        decode(DECODERS["zstd"], body, Limits(32 << 20))
    assert time.perf_counter() - started < 0.5


def test_zstd_window_over_8_mib_is_refused() -> None:
    params: dict[int, int] = {zstd.CompressionParameter.window_log: 24}
    comp = zstd.ZstdCompressor(options=params)
    body = comp.compress(os.urandom(1 << 20) * 12, zstd.ZstdCompressor.FLUSH_FRAME)  # size unknown
    with pytest.raises(BadEncoding, match="memory"):
        decode(DECODERS["zstd"], body, Limits(64 << 20))


def test_snappy_framing_chunks() -> None:
    data = os.urandom(1000) * 100
    framed = _snappy_framed(data)
    padding, skippable = b"\xfe\x03\x00\x00\0\0\0", b"\x80\x02\x00\x00ab"
    assert decode(DECODERS["snappy"], framed + padding + skippable + framed[10:], Limits(1 << 20)) == data * 2
    for bad, words in ((framed + b"\x02\x01\x00\x00z", "reserved chunk type"),  # unskippable
                       (framed[:14] + bytes([framed[14] ^ 1]) + framed[15:], "checksum"),
                       (framed + b"\x01\x05\x00\x01", "truncated"),
                       (compression.SNAPPY_STREAM_ID + b"\x01\x05\x00\x01" + b"\0" * 65541, "over 65536"),
                       (b"\xff\x06\x00\x00sNaPpZ", "stream identifier")):
        with pytest.raises(BadEncoding, match=words):
            decode(DECODERS["x-snappy-framed"], bad, Limits(1 << 20))
    with pytest.raises(BadEncoding, match="stream identifier"):
        decode(DECODERS["x-snappy-framed"], _snappy_block(data), Limits(1 << 20))
    many = compression.SNAPPY_STREAM_ID + padding * (compression.SNAPPY_MAX_CHUNKS + 1)
    with pytest.raises(TooManyMembers):
        decode(DECODERS["snappy"], many, Limits(1 << 20))


def test_raw_deflate_never_starts_with_a_zlib_header() -> None:
    for level in range(10):
        for data in (b"", b"\0" * 1000, os.urandom(1000), b"abc" * 500):
            assert not compression.is_zlib_header(zlib.compress(data, level, wbits=-15))
            assert compression.is_zlib_header(zlib.compress(data, level))


def test_grpc_messages_are_told_by_their_first_bytes() -> None:
    body = payload(Signal.TRACES, spans_per_request=2)
    assert compression.for_grpc_message(gzip.compress(body)) is compression.GZIP
    assert compression.for_grpc_message(zlib.compress(body)) is compression.DEFLATE
    assert compression.for_grpc_message(body) is None


@pytest.mark.parametrize("name", ["zstd", "snappy", "deflate"])
async def test_large_bodies_decode_off_the_event_loop(name: str) -> None:
    """While a 24 MiB body decodes the loop keeps ticking (judged on the count of ticks)."""
    data = os.urandom(1 << 20) * 24  # repeats a 1 MiB block: compresses only where the window reaches
    body = ENCODERS[name](data)
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    ticks = 0
    started = time.perf_counter()
    out = await decode_async(DECODERS[name], body, Limits(32 << 20))
    took = time.perf_counter() - started
    stop.set()
    await ticker
    assert out == data
    print(f"{name}: decode_async of {len(body)} B took {took * 1e3:.1f} ms; the loop ticked {ticks} times")
    assert ticks >= 3


# -- the encoding objects -----------------------------------------------------------------------


def test_encodings_by_media_type() -> None:
    assert encodings.for_media_type("application/x-protobuf") is encodings.PROTOBUF
    assert encodings.for_media_type("application/json") is encodings.JSON
    assert encodings.for_media_type("text/plain") is None
    assert encodings.media_type({"content-type": "Application/JSON; charset=utf-8"}) == "application/json"
    assert encodings.answering({"content-type": "text/plain"}) is encodings.PROTOBUF


def test_answers_in_each_encoding() -> None:
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(encodings.PROTOBUF.response(Signal.TRACES, 3, "bad resource"))
    assert (resp.partial_success.rejected_spans, resp.partial_success.error_message) == (3, "bad resource")
    assert encodings.PROTOBUF.response(Signal.TRACES, 0, "") == b""
    assert json.loads(encodings.JSON.response(Signal.TRACES, 3, "bad")) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "bad"}}
    st = status_pb2.Status(code=3, message="no")
    assert status_pb2.Status.FromString(encodings.PROTOBUF.status(st)) == st
    assert json.loads(encodings.JSON.status(st)) == {"code": 3, "message": "no"}


# -- OTLP/HTTP with every row -------------------------------------------------------------------


@pytest.fixture
async def handler() -> AsyncIterator[tuple[OtlpHttp, MemoryBus]]:
    async with otlp_http(1 << 20, 1 << 20) as pair:
        yield pair


def _body(media: str) -> bytes:
    pb = payload(Signal.TRACES, spans_per_request=16)
    return json_mapping.proto_to_json(Signal.TRACES, pb) if media == "application/json" else pb


@pytest.mark.parametrize("media", ["application/x-protobuf", "application/json"])
@pytest.mark.parametrize("case", list(ALL))
async def test_every_content_encoding_is_accepted(handler: tuple[OtlpHttp, MemoryBus], case: str,
                                                  media: str) -> None:
    h, bus = handler
    name, enc = ALL[case]
    headers = {"content-type": media, "content-encoding": name.upper()}  # names are case-insensitive
    resp = await h(Request("POST", "/v1/traces", headers, enc(_body(media))))
    assert (resp.status, resp.content_type) == (200, media), resp.body
    assert bus.end_offset == 1


@pytest.mark.parametrize("media", ["application/x-protobuf", "application/json"])
@pytest.mark.parametrize("name", list(ENCODERS))
async def test_bombs_are_413_in_the_request_encoding(handler: tuple[OtlpHttp, MemoryBus], name: str,
                                                     media: str) -> None:
    h, bus = handler
    resp = await h(Request("POST", "/v1/traces", {"content-type": media, "content-encoding": name},
                           ENCODERS[name](b"\0" * (2 << 20))))
    assert (resp.status, resp.content_type) == (413, media)
    st = status_pb2.Status()
    if media == "application/json":
        assert "exceeds" in json.loads(resp.body)["message"]
    else:
        st.ParseFromString(resp.body)
        assert "exceeds" in st.message
    assert bus.end_offset == 0


async def test_unknown_and_broken_encodings(handler: tuple[OtlpHttp, MemoryBus]) -> None:
    h, bus = handler
    pb = {"content-type": "application/x-protobuf"}
    resp = await h(Request("POST", "/v1/traces", {**pb, "content-encoding": "br"}, b"x"))
    assert resp.status == 415
    assert "zstd" in status_pb2.Status.FromString(resp.body).message
    resp = await h(Request("POST", "/v1/traces", {**pb, "content-encoding": "zstd"}, _truncated("zstd")))
    assert resp.status == 400
    assert bus.end_offset == 0
