"""otlp._otlpcheck.span_buckets (C) against wire.group_spans (Python, the reference): byte-identical
buckets for every request the Python walk accepts, None where it raises, and no crash on damage."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator

import pytest

from otlp import _otlpcheck, wire
from otlp.signals import Signal
from otlp.wire import encode_varint
from tests import otlp_payloads, sdk_otlp
from tests.unit.test_partitioning import traces_with

PARTITIONS = (1, 2, 6, 32)


def python_buckets(payload: bytes, partitions: int) -> dict[int, bytes] | None:
    """The reference, or None where it raises WireError."""
    try:
        return wire.group_spans(payload, lambda trace_id: zlib.crc32(trace_id) % partitions)
    except wire.WireError:
        return None


def assert_same(payload: bytes, partitions: int) -> dict[int, bytes]:
    expected = python_buckets(payload, partitions)
    got = _otlpcheck.span_buckets(payload, partitions)
    assert expected is not None
    assert got == expected
    assert list(got) == list(expected)  # buckets in the same order too
    return got


# --- raw protobuf building, for shapes SDKs do not write ------------------------------------


def field(num: int, body: bytes) -> bytes:
    return encode_varint(num << 3 | 2) + encode_varint(len(body)) + body


def varint_field(num: int, value: int) -> bytes:
    return encode_varint(num << 3) + encode_varint(value)


def random_span(rng: random.Random, trace_ids: list[bytes]) -> bytes:
    """A span body with its trace id first, late, repeated, of another length or missing."""
    parts = [field(2, rng.randbytes(8)), field(5, f"op-{rng.randrange(100)}".encode()),
             b"\x39" + rng.randbytes(8), varint_field(6, rng.randrange(6))]
    rng.shuffle(parts)
    where = rng.random()
    tid = rng.choice(trace_ids)
    if where < 0.5:
        parts.insert(0, field(1, tid))
    elif where < 0.7:
        parts.insert(rng.randrange(len(parts) + 1), field(1, tid))
    elif where < 0.8:
        parts.insert(0, field(1, tid))
        parts.append(field(1, rng.choice(trace_ids)))  # the last occurrence is the one decoders keep
    elif where < 0.85:
        parts.insert(0, field(1, tid[: rng.randrange(17)]))  # short or empty id
    elif where < 0.9:
        parts.insert(0, b"\x8a\x00" + encode_varint(len(tid)) + tid)  # non-canonical tag of field 1
    # else: no trace id at all
    return b"".join(parts)


def random_scope(rng: random.Random, trace_ids: list[bytes]) -> bytes:
    parts = [field(2, random_span(rng, trace_ids)) for _ in range(rng.randrange(12))]
    head = [field(1, field(1, b"lib") + field(2, b"1.0")), field(3, b"https://schema/1.2")]
    for h in head[: rng.randrange(3)]:
        parts.insert(rng.randrange(len(parts) + 1), h)  # scope header before, between or after spans
    if rng.random() < 0.1:
        parts.append(b"\x92\x00\x00")  # an empty span under a non-canonical tag: a header field to the walk
    return b"".join(parts)


def random_request(rng: random.Random) -> bytes:
    trace_ids = [rng.randbytes(16) for _ in range(rng.randrange(1, 9))]
    out = []
    for r in range(rng.randrange(5)):
        parts = [field(2, random_scope(rng, trace_ids)) for _ in range(rng.randrange(4))]
        head = [field(1, field(1, field(1, b"service.name") + field(2, field(1, f"svc-{r}".encode())))),
                field(3, b"https://schema/1.2"), varint_field(9, r)]
        for h in head[: rng.randrange(4)]:
            parts.insert(rng.randrange(len(parts) + 1), h)
        out.append(field(1, b"".join(parts)))
    if rng.random() < 0.2:
        out.insert(rng.randrange(len(out) + 1), field(7, b"unknown top-level field"))
    return b"".join(out)


# --- equality on valid requests -------------------------------------------------------------


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_sdk_shaped_requests_split_exactly_as_python(partitions: int) -> None:
    payloads = [otlp_payloads.payload(Signal.TRACES, spans_per_request=512, traces=64, seed=3),
                otlp_payloads.payload(Signal.TRACES, spans_per_request=40, resources=3, scopes=2,
                                      traces=7, events=2, seed=4),
                sdk_otlp.spans_payload("acme", traces=5, children=3)[0],
                traces_with([bytes(16), bytes(range(16)), b"\xff" * 16]).SerializeToString()]
    for payload in payloads:
        got = assert_same(payload, partitions)
        assert len(got) >= 1


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_random_valid_requests_split_exactly_as_python(partitions: int) -> None:
    rng = random.Random(partitions)
    for _ in range(600):
        assert_same(random_request(rng), partitions)


def test_empty_payload_has_no_buckets() -> None:
    assert _otlpcheck.span_buckets(b"", 6) == {} == python_buckets(b"", 6)


def test_partitions_out_of_range_leave_it_to_python() -> None:
    payload = traces_with([bytes(16)]).SerializeToString()
    assert _otlpcheck.span_buckets(payload, 0) is None
    assert _otlpcheck.span_buckets(payload, 1 << 20) is None


# --- bounded mutation fuzz ------------------------------------------------------------------


def damaged_copies(rng: random.Random, payload: bytes) -> Iterator[tuple[bytes, int]]:
    """(damaged payload, partitions): ``payload`` cut at about 60 places (6 partitions), then 150
    copies with 1 to 3 bytes changed to framing-like or random values (any of PARTITIONS)."""
    for cut in range(0, len(payload), max(1, len(payload) // 60)):
        yield payload[:cut], 6
    for _ in range(150):
        damaged = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            if not damaged:
                break
            i = rng.randrange(len(damaged))
            damaged[i] = rng.choice((rng.randrange(256), damaged[i] ^ 0x80, 0x12, 0x0A, 0xFF, 0x00))
        yield bytes(damaged), rng.choice(PARTITIONS)


def check_damaged(payload: bytes, partitions: int) -> None:
    expected = python_buckets(payload, partitions)
    got = _otlpcheck.span_buckets(payload, partitions)
    if expected is None:
        assert got is None
    else:
        assert got == expected


def test_truncated_and_flipped_requests_match_python_or_give_none() -> None:
    rng = random.Random(15)
    seeds = [random_request(rng) for _ in range(40)]
    seeds.append(otlp_payloads.payload(Signal.TRACES, spans_per_request=20, resources=2, scopes=2,
                                       traces=5, seed=5))
    for payload in seeds:
        for damaged, partitions in damaged_copies(rng, payload):
            check_damaged(damaged, partitions)


def test_oversized_varints_match_python_or_give_none() -> None:
    span = field(2, field(1, bytes(16)) + field(5, b"x"))
    huge_tag = b"\xff" * 9 + b"\x7f"  # a 10-byte tag beyond 64 bits: a huge unknown field to Python
    eleven = b"\xff" * 10 + b"\x01"  # an 11-byte varint: refused
    cases = [field(1, field(2, span + huge_tag + b"\x00")),
             field(1, field(2, field(2, huge_tag + b"\x00" + field(1, bytes(16))))),
             field(1, field(2, b"\x12" + eleven)),
             field(1, field(2, b"\x12" + b"\xff" * 9 + b"\x01")),
             field(1, field(2, span + b"\x12")),
             field(1, b"\x12"),
             eleven]
    for payload in cases:
        check_damaged(payload, 6)
