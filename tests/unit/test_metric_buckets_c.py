"""otlp._otlpcheck.metric_buckets (C) against wire.group_resources with partitioning.metric_bucket
(Python, the reference): byte-identical buckets for every request the Python walk accepts, None
where it raises, and no crash on damage."""

from __future__ import annotations

import random

import pytest

from otlp import _otlpcheck, partitioning, wire
from otlp.signals import Signal
from tests import otlp_payloads
from tests.unit.test_partitioning import metrics_for
from tests.unit.test_span_buckets_c import PARTITIONS, damaged_copies, field, varint_field

KEYS = (b"service.name", b"service.namespace", b"service.instance.id")


def python_buckets(payload: bytes, partitions: int) -> dict[int, bytes] | None:
    """The reference, or None where it raises WireError."""
    try:
        return wire.group_resources(payload, partitioning.METRIC_IDENTITY_KEYS,
                                    lambda attrs: partitioning.metric_bucket(attrs, partitions))
    except wire.WireError:
        return None


def assert_same(payload: bytes, partitions: int) -> dict[int, bytes]:
    expected = python_buckets(payload, partitions)
    got = _otlpcheck.metric_buckets(payload, partitions)
    assert expected is not None
    assert got == expected
    assert list(got) == list(expected)  # buckets in the same order too
    return got


# --- raw protobuf building, for shapes SDKs do not write ------------------------------------


def any_value(rng: random.Random, text: str) -> bytes:
    """An AnyValue body: mostly a string, sometimes an int, empty, padded or two strings."""
    where = rng.random()
    if where < 0.6:
        return field(1, text.encode())
    if where < 0.7:
        return varint_field(3, rng.randrange(1000))  # int_value: the label is its bytes
    if where < 0.75:
        return b""
    if where < 0.85:
        return field(1, text.encode()) + field(1, b"later")  # not only a string_value: its bytes
    return field(1, ("x" * rng.randrange(100, 300)).encode())  # a two-byte length prefix


def attribute(rng: random.Random, key: bytes, value: bytes) -> bytes:
    """A KeyValue body, key first as SDKs write it, or value first, or with the key repeated."""
    where = rng.random()
    if where < 0.7:
        return field(1, key) + field(2, value)
    if where < 0.85:
        return field(2, value) + field(1, key)
    if where < 0.9:
        return field(1, b"other") + field(2, value) + field(1, key)  # the last key counts
    if where < 0.95:
        return field(1, key)  # no value
    return field(1, key) + field(2, value) + field(2, field(1, b"last"))  # the last value counts


def random_resource(rng: random.Random, r: int) -> bytes:
    names = [f"svc-{rng.randrange(4)}", "", "checkout"]
    attrs = [attribute(rng, b"host.name", field(1, f"host-{r}".encode()))]
    for key in KEYS:
        if rng.random() < 0.7:
            attrs.append(attribute(rng, key, any_value(rng, rng.choice(names) + key[-2:].decode())))
    if rng.random() < 0.1:
        attrs.append(attribute(rng, b"service.name", field(1, b"again")))  # the last occurrence wins
    if rng.random() < 0.05:
        attrs.append(attribute(rng, b"service.nam", field(1, b"near miss")))
    rng.shuffle(attrs)
    body = b"".join(field(1, a) for a in attrs)
    if rng.random() < 0.1:
        body += varint_field(2, 3)  # dropped_attributes_count
    return body


def random_resource_metrics(rng: random.Random, r: int) -> bytes:
    scope = field(2, field(1, field(1, b"meter")) + field(2, field(1, b"m") + field(5, field(1, b"pt"))))
    parts = [scope for _ in range(rng.randrange(3))]
    head = [field(1, random_resource(rng, r)), field(3, b"https://schema/1.2")]
    if rng.random() < 0.1:
        head.append(field(1, random_resource(rng, r)))  # a second resource field: merged by decoders
    for h in head[: rng.randrange(len(head) + 1)]:
        parts.insert(rng.randrange(len(parts) + 1), h)
    return b"".join(parts)


def random_request(rng: random.Random) -> bytes:
    out = [field(1, random_resource_metrics(rng, r)) for r in range(rng.randrange(7))]
    for _ in range(rng.randrange(3) if rng.random() < 0.2 else 0):
        out.insert(rng.randrange(len(out) + 1), field(7, b"unknown top-level field"))
    return b"".join(out)


# --- equality on valid requests -------------------------------------------------------------


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_sdk_shaped_requests_split_exactly_as_python(partitions: int) -> None:
    payloads = [otlp_payloads.payload(Signal.METRICS, points=13, resources=8,
                                      resource_extra={"service.instance.id": "i-1"}),
                otlp_payloads.payload(Signal.METRICS, points=4, resources=3, scopes=2,
                                      resource_extra={"service.namespace": "shop"}),
                metrics_for([("checkout", "a"), ("checkout", "b"), ("cart", "a"), ("checkout", "a")])
                .SerializeToString()]
    for payload in payloads:
        got = assert_same(payload, partitions)
        assert len(got) >= 1


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_random_valid_requests_split_exactly_as_python(partitions: int) -> None:
    rng = random.Random(partitions)
    for _ in range(800):
        assert_same(random_request(rng), partitions)


def test_one_bucket_for_the_whole_request_is_the_request_itself() -> None:
    payload = metrics_for([("checkout", "a"), ("checkout", "a")]).SerializeToString()
    (got,) = assert_same(payload, 6).values()
    assert got is payload  # no copy when every resource goes to one partition


def test_unknown_top_level_fields_go_first_in_the_first_bucket() -> None:
    one = metrics_for([("checkout", "a")]).SerializeToString()
    two = metrics_for([("cart", "b")]).SerializeToString()
    extra = field(7, b"x")
    got = assert_same(one + extra + two + extra, 4)
    assert next(iter(got.values())).startswith(extra + extra + one)
    assert assert_same(extra, 4) == {}  # no resource: nothing to carry them


def test_empty_payload_has_no_buckets() -> None:
    assert _otlpcheck.metric_buckets(b"", 6) == {} == python_buckets(b"", 6)


def test_partitions_out_of_range_leave_it_to_python() -> None:
    payload = metrics_for([("checkout", "a")]).SerializeToString()
    assert _otlpcheck.metric_buckets(payload, 0) is None
    assert _otlpcheck.metric_buckets(payload, 1 << 20) is None


def test_buckets_takes_the_c_split_and_falls_back_to_python_for_broken_framing() -> None:
    payload = metrics_for([("checkout", "a"), ("cart", "b")]).SerializeToString()
    assert partitioning.buckets(Signal.METRICS, payload, 6) == _otlpcheck.metric_buckets(payload, 6)
    broken = b"\x0a\x05\x0a\x10"
    assert _otlpcheck.metric_buckets(broken, 4) is None
    with pytest.raises(wire.WireError, match="resource attributes"):
        partitioning.buckets(Signal.METRICS, broken, 4)


# --- bounded mutation fuzz ------------------------------------------------------------------


def check_damaged(payload: bytes, partitions: int) -> None:
    expected = python_buckets(payload, partitions)
    got = _otlpcheck.metric_buckets(payload, partitions)
    if expected is None:
        assert got is None
    else:
        assert got == expected
        assert list(got) == list(expected)


def test_truncated_and_flipped_requests_match_python_or_give_none() -> None:
    rng = random.Random(15)
    seeds = [random_request(rng) for _ in range(40)]
    seeds.append(otlp_payloads.payload(Signal.METRICS, points=2, resources=3,
                                       resource_extra={"service.instance.id": "i"}))
    for payload in seeds:
        for damaged, partitions in damaged_copies(rng, payload):
            check_damaged(damaged, partitions)


def test_oversized_varints_and_overrunning_keys_match_python_or_give_none() -> None:
    huge_tag = b"\xff" * 9 + b"\x7f"  # a 10-byte tag beyond 64 bits: a huge unknown field to Python
    eleven = b"\xff" * 10 + b"\x01"  # an 11-byte varint: refused
    name = field(1, field(1, b"service.name") + field(2, field(1, b"a")))
    cases = [field(1, field(1, name + huge_tag + b"\x00")),
             field(1, field(1, name) + huge_tag + b"\x00"),
             field(1, field(1, name + b"\x0a" + eleven)),
             field(1, field(1, field(1, b"\x0a\x0cservice.name"))),  # a key longer than its attribute
             field(1, field(1, field(1, b"\x0a\x0cservice.nam"))) + b"e",  # ... running into the next bytes
             field(1, field(1, field(1, b"\x0a\x7f") + b"service.name")),
             field(1, field(1, name + b"\x12\x01")),  # a Resource field 2 cut short, keys present
             field(1, field(1, field(1, b"service.instance.id") + b"\x0b")),  # a group wire type
             field(1, b"\x0a"),
             eleven]
    for payload in cases:
        for partitions in PARTITIONS:
            check_damaged(payload, partitions)
    assert _otlpcheck.metric_buckets(memoryview(cases[0]), 6) == python_buckets(cases[0], 6)
