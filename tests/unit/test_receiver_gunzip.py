"""Bounded gzip inflation: normal bodies, concatenated members, bombs and broken input."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.receivers.gunzip import BadGzip, TooLarge, gunzip


def test_roundtrip() -> None:
    data = b"otlp" * 10_000
    assert gunzip(gzip.compress(data), len(data)) == data


def test_exact_limit_is_allowed_one_more_byte_is_not() -> None:
    data = b"x" * 1000
    assert gunzip(gzip.compress(data), 1000) == data
    with pytest.raises(TooLarge):
        gunzip(gzip.compress(data + b"y"), 1000)


def test_concatenated_members() -> None:
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 100) == b"abcdef"


def test_bomb_stops_at_the_limit() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(comp.compress(b"\0" * (1 << 20)) for _ in range(64)) + comp.flush()
    with pytest.raises(TooLarge, match="exceeds 1048576"):
        gunzip(bomb, 1 << 20)


def test_empty_body_is_an_empty_request() -> None:
    assert gunzip(b"", 10) == b""


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"hello" * 100)[:-12]])
def test_bad_or_truncated(body: bytes) -> None:
    with pytest.raises(BadGzip):
        gunzip(body, 10_000)
