"""Hand-made protobuf wire bytes and a structure-aware mutator for OTLP Export requests.

Three parts, all driven by the opentelemetry-proto message descriptors:

- wire builders (``varint``, ``tag``, ``len_field`` ...) for inputs the protobuf classes cannot
  express: a varint of 10 or 11 bytes, a value of 2^64 or more, a fixed64 field as a varint,
  a string that is not UTF-8;
- ``Mutator``: parses a valid request into a tree of fields (LEN fields that are known
  submessages become subtrees), applies one seeded random mutation and re-encodes the lengths,
  so most mutants stay well framed and reach the content checks;
- ``expect``: the oracle. It says, per ResourceX, whether the edge must accept it (every field
  of a known number has its wire type, every varint is at most 10 bytes and below 2^64, 32-bit
  fields hold 32-bit values, strings are UTF-8, trace/span ids are 16/8 bytes or empty, AnyValue
  nests at most ``MAX_ANY_DEPTH``
  arrays/kvlists) and how many items it holds as a protobuf decoder sees them (a oneof keeps
  its last member). Unknown fields are fine when well framed; a varint written longer than
  needed (non-canonical) but within 10 bytes and 64 bits is fine, as protobuf allows.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValueList

from otlp.signals import Signal

MAX_ANY_DEPTH = 16  # arrays/kvlists an AnyValue may nest; the 17th is refused
U64 = 1 << 64

REQUEST_DESC: dict[Signal, Descriptor] = {
    Signal.TRACES: ExportTraceServiceRequest.DESCRIPTOR,
    Signal.LOGS: ExportLogsServiceRequest.DESCRIPTOR,
    Signal.METRICS: ExportMetricsServiceRequest.DESCRIPTOR,
}
RX_NAME = {Signal.TRACES: "resource_spans", Signal.LOGS: "resource_logs", Signal.METRICS: "resource_metrics"}
REJECTED_FIELD = {Signal.TRACES: "rejected_spans", Signal.LOGS: "rejected_log_records",
                  Signal.METRICS: "rejected_data_points"}
_METRIC_DATA = frozenset((5, 7, 9, 10, 11))
_NESTING = frozenset((ArrayValue.DESCRIPTOR.full_name, KeyValueList.DESCRIPTOR.full_name))
_ANY = AnyValue.DESCRIPTOR.full_name

# --- wire builders --------------------------------------------------------------------------


def varint(v: int, width: int = 0) -> bytes:
    """Base-128 varint of ``v`` (negative: two's complement in 64 bits), padded with
    continuation bytes to ``width`` bytes when that is longer: ``varint(1, 10)`` is a valid,
    non-canonical 10-byte encoding of 1, ``varint(1, 11)`` an invalid 11-byte one."""
    if v < 0:
        v += U64
    out = bytearray()
    while True:
        out.append(v & 0x7F)
        v >>= 7
        if v == 0:
            break
    while len(out) < width:
        out.append(0)
    for i in range(len(out) - 1):
        out[i] |= 0x80
    return bytes(out)


def tag(num: int, wt: int) -> bytes:
    return varint(num << 3 | wt)


def len_field(num: int, body: bytes) -> bytes:
    return tag(num, 2) + varint(len(body)) + body


def fixed64_field(num: int, v: int) -> bytes:
    """Field ``num`` of wire type 1 (fixed64, sfixed64, double bits) holding ``v`` (unsigned)."""
    return tag(num, 1) + v.to_bytes(8, "little")


def varint_field(num: int, raw_varint: bytes) -> bytes:
    """Field ``num`` of wire type 0 whose value is the given (possibly malformed) varint bytes."""
    return tag(num, 0) + raw_varint


def zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63) if v < 0 else v << 1


def over_64_bits() -> bytes:
    """A 10-byte varint whose last byte carries more than the 64th bit: 2^70 - 1."""
    return b"\xff" * 9 + b"\x7f"


def string_any(s: bytes) -> bytes:
    """AnyValue{string_value: s} body, ``s`` raw (so it may be invalid UTF-8)."""
    return len_field(1, s)


def key_value(key: bytes, any_body: bytes) -> bytes:
    """KeyValue body."""
    return len_field(1, key) + len_field(2, any_body)


def nested_any(depth: int, kind: str = "array", leaf: bytes | None = None) -> bytes:
    """An AnyValue body wrapping ``leaf`` (default int_value 7) in ``depth`` arrays or kvlists."""
    body = leaf if leaf is not None else varint_field(3, varint(7))
    for _ in range(depth):
        if kind == "array":  # AnyValue.array_value(5) -> ArrayValue.values(1)
            body = len_field(5, len_field(1, body))
        else:  # AnyValue.kvlist_value(6) -> KeyValueList.values(1) -> KeyValue
            body = len_field(6, len_field(1, key_value(b"k", body)))
    return body


_ID_SIZES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"abc\x80")

# --- the field tree -------------------------------------------------------------------------


@dataclass
class Node:
    """One field: ``raw`` is the value bytes (LEN: the body without its length prefix; varint:
    the varint bytes as found), ``children`` the parsed body when it is a known submessage."""

    num: int
    wt: int
    raw: bytes
    fdesc: FieldDescriptor | None = None
    children: list[Node] | None = None
    length_delta: int = 0  # added to the encoded length of a LEN field: breaks the framing
    tag_width: int = 0  # pad the tag varint to this many bytes


class Malformed(Exception):
    """Bytes that are not well-framed protobuf (or break a rule of ``check``)."""


def read_varint(buf: bytes, pos: int, end: int, limit: int = U64) -> tuple[int, int, int]:
    """(value, position after, bytes used); at most 10 bytes and below ``limit``, else Malformed."""
    result = 0
    start = pos
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >= limit:
                raise Malformed(f"varint of 2^{limit.bit_length() - 1} or more")
            return result, pos, pos - start
        shift += 7
        if shift >= 70:
            raise Malformed("varint longer than 10 bytes")
    raise Malformed("truncated varint")


def raw_fields(buf: bytes, pos: int, end: int, strict: bool = True) -> Iterator[tuple[int, int, int, int]]:
    """(number, wire type, value start, value end) of each field; Malformed on bad framing.

    A tag is a varint32 of at most 5 bytes (as upb reads it). ``strict``: varint values must
    be below 2^64 too; without it only the framing counts (for counting items)."""
    limit = U64 if strict else 1 << 70
    while pos < end:
        t, pos, used = read_varint(buf, pos, end, 1 << 32)
        if used > 5:
            raise Malformed(f"tag of {used} bytes")
        num, wt = t >> 3, t & 7
        if num == 0 or num >= 1 << 29:
            raise Malformed(f"field number {num}")
        if wt == 0:
            vs = pos
            _, pos, _ = read_varint(buf, pos, end, limit)
        elif wt == 1:
            vs, pos = pos, pos + 8
        elif wt == 5:
            vs, pos = pos, pos + 4
        elif wt == 2:
            ln, vs, _ = read_varint(buf, pos, end, 1 << 32)
            pos = vs + ln
        else:
            raise Malformed(f"field {num}: wire type {wt}")
        if pos > end:
            raise Malformed(f"field {num}: past the end")
        yield num, wt, vs, pos


def parse(buf: bytes, desc: Descriptor) -> list[Node]:
    """The field tree of a well-framed message; submessages that do not parse stay raw."""
    out: list[Node] = []
    for num, wt, vs, ve in raw_fields(buf, 0, len(buf)):
        f = desc.fields_by_number.get(num)
        node = Node(num, wt, buf[vs:ve], f)
        if f is not None and wt == 2 and f.type == FieldDescriptor.TYPE_MESSAGE:
            with contextlib.suppress(Malformed):
                node.children = parse(node.raw, f.message_type)
        out.append(node)
    return out


def encode(nodes: list[Node]) -> bytes:
    out = bytearray()
    for n in nodes:
        out += varint(n.num << 3 | n.wt, n.tag_width)
        if n.wt == 2:
            body = encode(n.children) if n.children is not None else n.raw
            out += varint(max(0, len(body) + n.length_delta)) + body
        else:
            out += n.raw
    return bytes(out)


def walk(nodes: list[Node]) -> Iterator[tuple[list[Node], int, Node]]:
    """(parent list, index, node) for every node, depth first."""
    for i, n in enumerate(nodes):
        yield nodes, i, n
        if n.children is not None:
            yield from walk(n.children)


# --- the oracle ----------------------------------------------------------------------------

_FD = FieldDescriptor
_VARINT_TYPES = frozenset((_FD.TYPE_INT32, _FD.TYPE_INT64, _FD.TYPE_UINT32, _FD.TYPE_UINT64, _FD.TYPE_SINT32,
                           _FD.TYPE_SINT64, _FD.TYPE_BOOL, _FD.TYPE_ENUM))
_FIXED64_TYPES = frozenset((_FD.TYPE_FIXED64, _FD.TYPE_SFIXED64, _FD.TYPE_DOUBLE))
_FIXED32_TYPES = frozenset((_FD.TYPE_FIXED32, _FD.TYPE_SFIXED32, _FD.TYPE_FLOAT))


def _wire_type(f: FieldDescriptor) -> int:
    if f.type in _VARINT_TYPES:
        return 0
    if f.type in _FIXED64_TYPES:
        return 1
    if f.type in _FIXED32_TYPES:
        return 5
    return 2


def _check_varint_range(f: FieldDescriptor, v: int) -> None:
    if f.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
        if not (v < 1 << 31 or v >= U64 - (1 << 31)):
            raise Malformed(f"{f.name}: {v} does not fit int32")
    elif f.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32) and v >= 1 << 32:
        raise Malformed(f"{f.name}: {v} does not fit 32 bits")


def check(buf: bytes, pos: int, end: int, desc: Descriptor, depth: int = 0) -> None:
    """Raise Malformed naming the first rule the message body at buf[pos:end] breaks."""
    for num, wt, vs, ve in raw_fields(buf, pos, end):
        f = desc.fields_by_number.get(num)
        if f is None:
            continue
        want = _wire_type(f)
        if wt == 2 and want != 2 and f.is_repeated:  # packed
            p = vs
            while p < ve:
                if want == 0:
                    v, p, _ = read_varint(buf, p, ve)
                    _check_varint_range(f, v)
                else:
                    p += 8 if want == 1 else 4
            if p != ve:
                raise Malformed(f"{f.name}: packed body is not whole values")
            continue
        if wt != want:
            raise Malformed(f"{f.name}: wire type {wt}, expected {want}")
        if wt == 0:
            _check_varint_range(f, read_varint(buf, vs, ve)[0])
        elif f.type == FieldDescriptor.TYPE_STRING:
            try:
                buf[vs:ve].decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed(f"{f.name}: not UTF-8") from None
        elif (f.type == FieldDescriptor.TYPE_BYTES and f.name in _ID_SIZES
              and ve - vs not in (0, _ID_SIZES[f.name])):
            raise Malformed(f"{f.name}: an id of {ve - vs} bytes")  # pdata: "invalid length for ID"
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            sub = f.message_type
            d = depth + 1 if sub.full_name in _NESTING else depth
            if d > MAX_ANY_DEPTH:
                raise Malformed(f"{f.name}: AnyValue nested deeper than {MAX_ANY_DEPTH}")
            try:
                check(buf, vs, ve, sub, d)
            except Malformed as e:
                raise Malformed(f"{f.name}.{e}") from None


def _len_children(buf: bytes, pos: int, end: int, num: int) -> list[tuple[int, int]]:
    return [(vs, ve) for n, wt, vs, ve in raw_fields(buf, pos, end, strict=False) if n == num and wt == 2]


def _points(buf: bytes, pos: int, end: int) -> int:
    """Data points of one Metric body, as a decoder sees them: the last oneof member wins, and
    repeated occurrences of the same member merge."""
    member, n = 0, 0
    for num, wt, vs, ve in raw_fields(buf, pos, end, strict=False):
        if num in _METRIC_DATA and wt == 2:
            if num != member:
                member, n = num, 0
            n += len(_len_children(buf, vs, ve, 1))
    return n


def count_items(signal: Signal, buf: bytes, pos: int, end: int) -> int:
    """Items in one ResourceX body (spans, log records, metric data points); Malformed if its
    framing does not let them be counted."""
    n = 0
    for svs, sve in _len_children(buf, pos, end, 2):
        for ivs, ive in _len_children(buf, svs, sve, 2):
            n += _points(buf, ivs, ive) if signal is Signal.METRICS else 1
    return n


def count_items_naive(signal: Signal, buf: bytes, pos: int, end: int) -> int:
    """Like ``count_items`` but counting every oneof member of a Metric (what a wire walk
    that does not know oneofs counts): either count is a fair rejected count for a bad part."""
    if signal is not Signal.METRICS:
        return count_items(signal, buf, pos, end)
    n = 0
    for svs, sve in _len_children(buf, pos, end, 2):
        for ivs, ive in _len_children(buf, svs, sve, 2):
            for num, wt, vs, ve in raw_fields(buf, ivs, ive, strict=False):
                if num in _METRIC_DATA and wt == 2:
                    n += len(_len_children(buf, vs, ve, 1))
    return n


@dataclass
class RxVerdict:
    error: str | None  # None: the edge must accept this ResourceX
    items: int | None  # None: not countable (its framing is broken)
    items_naive: int | None


@dataclass
class Expectation:
    """What the edge must do with one request."""

    envelope_error: str | None = None  # the whole request must be refused
    rxs: list[RxVerdict] = field(default_factory=list)

    @property
    def accepted_items(self) -> int:
        return sum(r.items or 0 for r in self.rxs if r.error is None)

    @property
    def any_invalid(self) -> bool:
        return any(r.error is not None for r in self.rxs)

    @property
    def any_valid(self) -> bool:
        return any(r.error is None for r in self.rxs)

    def must_refuse(self) -> bool:
        """Nothing valid at all: 400 / INVALID_ARGUMENT."""
        return self.envelope_error is not None or (self.any_invalid and not self.any_valid)

    def rejected_choices(self) -> set[int] | None:
        """The acceptable partial-success rejected counts, None when one bad part is uncountable."""
        bad = [r for r in self.rxs if r.error is not None]
        if any(r.items is None or r.items_naive is None for r in bad):
            return None
        return {sum(r.items or 0 for r in bad), sum(r.items_naive or 0 for r in bad)}

    def errors(self) -> list[str]:
        return [self.envelope_error] if self.envelope_error else [r.error for r in self.rxs if r.error]

    def first_error(self) -> str:
        return self.envelope_error or next((r.error for r in self.rxs if r.error), "") or ""


def expect(signal: Signal, buf: bytes) -> Expectation:
    """The oracle for one protobuf Export request."""
    out = Expectation()
    desc = REQUEST_DESC[signal]
    rx_desc = desc.fields_by_number[1].message_type
    try:
        top = list(raw_fields(buf, 0, len(buf)))
    except Malformed as e:
        out.envelope_error = f"envelope: {e}"
        return out
    for num, wt, vs, ve in top:
        if num != 1:
            continue
        if wt != 2:
            out.envelope_error = f"{RX_NAME[signal]}: wire type {wt}"
            return out
        items: int | None
        naive: int | None
        try:
            items = count_items(signal, buf, vs, ve)
            naive = count_items_naive(signal, buf, vs, ve)
        except Malformed:
            items = naive = None
        try:
            check(buf, vs, ve, rx_desc)
        except Malformed as e:
            out.rxs.append(RxVerdict(str(e), items, naive))
        else:
            assert items is not None  # check() passing implies well framed
            out.rxs.append(RxVerdict(None, items, naive))
    return out


# --- the mutator ----------------------------------------------------------------------------

_STRING = FieldDescriptor.TYPE_STRING


def _is_string(n: Node) -> bool:
    return n.fdesc is not None and n.fdesc.type == _STRING and n.wt == 2


def _is_varint(n: Node) -> bool:
    return n.wt == 0


def _is_any(n: Node) -> bool:
    msg = n.fdesc.message_type if n.fdesc is not None else None
    return msg is not None and msg.full_name == _ANY and n.children is not None


Op = Callable[[list[Node], int, Node], None]  # (parent list, index in it, node): mutate in place


def _anything(n: Node) -> bool:
    return True


def _raw_len(n: Node) -> bool:
    return n.wt == 2 and n.children is None


class Mutator:
    """One seeded mutation of a valid request at a time: ``mutate(signal, body)`` returns
    (mutant, name of the mutation). Deterministic for a given ``random.Random`` state."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # (name, which nodes it applies to, what it does, weight)
        self.ops: list[tuple[str, Callable[[Node], bool], Op, int]] = [
            ("flip_byte", lambda n: n.children is None and len(n.raw) > 0, self._flip, 3),
            ("insert_bytes", _raw_len, self._insert, 2),
            ("delete_bytes", lambda n: _raw_len(n) and len(n.raw) > 0, self._delete, 2),
            ("wire_type", _anything, self._wire_type, 3),
            ("invalid_utf8", _is_string, self._invalid_utf8, 3),
            ("long_varint", _is_varint, self._long_varint, 3),
            ("varint_high_bits", _is_varint, self._high_bits, 3),
            ("out_of_range_32", _is_32_bit_varint, self._out_of_range, 2),
            ("duplicate_field", _anything, self._duplicate, 2),
            ("drop_field", _anything, self._drop, 2),
            ("nest_any", _is_any, self._nest_any, 3),
            ("truncate_value", lambda n: n.wt == 2 and len(n.raw) > 1, self._truncate_value, 1),
            ("bad_length", lambda n: n.wt == 2, self._bad_length, 1),
            ("swap_lengths", _has_two_len_children, self._swap_lengths, 1),
            ("long_tag", _anything, self._long_tag, 1),
        ]
        self._weighted = [i for i, (_n, _p, _o, w) in enumerate(self.ops) for _ in range(w)]

    def mutate(self, signal: Signal, body: bytes) -> tuple[bytes, str]:
        rng = self.rng
        if rng.random() < 0.03:  # cut the serialized request anywhere
            return body[:rng.randrange(len(body) + 1)], "truncate_request"
        tree = parse(body, REQUEST_DESC[signal])
        rounds = 1 if rng.random() < 0.7 else rng.randint(2, 3)
        done: list[str] = []
        for _ in range(rounds):
            for _attempt in range(8):
                name, applies, op, _w = self.ops[rng.choice(self._weighted)]
                found = [t for t in walk(tree) if applies(t[2])]
                if found:
                    op(*rng.choice(found))
                    done.append(name)
                    break
        return encode(tree), "+".join(done) or "none"

    # -- operations on one node
    def _flip(self, parent: list[Node], i: int, n: Node) -> None:
        b = bytearray(n.raw)
        at = self.rng.randrange(len(b))
        b[at] = b[at] ^ (1 << self.rng.randrange(8)) if self.rng.random() < 0.7 else self.rng.randrange(256)
        n.raw = bytes(b)

    def _insert(self, parent: list[Node], i: int, n: Node) -> None:
        at = self.rng.randrange(len(n.raw) + 1)
        n.raw = n.raw[:at] + self.rng.randbytes(self.rng.randint(1, 4)) + n.raw[at:]

    def _delete(self, parent: list[Node], i: int, n: Node) -> None:
        at = self.rng.randrange(len(n.raw))
        n.raw = n.raw[:at] + n.raw[at + self.rng.randint(1, 4):]

    def _wire_type(self, parent: list[Node], i: int, n: Node) -> None:
        wt = self.rng.choice([w for w in (0, 1, 2, 5) if w != n.wt])
        if wt == 0:
            raw = varint(self.rng.choice((0, 1, 150, U64 - 1)))
        elif wt in (1, 5):
            raw = self.rng.randbytes(8 if wt == 1 else 4)
        else:
            raw = _body(n) if self.rng.random() < 0.5 else self.rng.randbytes(self.rng.randint(0, 9))
        n.wt, n.raw, n.children = wt, raw, None

    def _invalid_utf8(self, parent: list[Node], i: int, n: Node) -> None:
        at = self.rng.randrange(len(n.raw) + 1)
        n.raw = n.raw[:at] + self.rng.choice(INVALID_UTF8) + n.raw[at:]

    def _long_varint(self, parent: list[Node], i: int, n: Node) -> None:
        try:
            v = read_varint(n.raw, 0, len(n.raw))[0]
        except Malformed:  # already mutated past reading
            v = 1
        n.raw = varint(v, self.rng.choice((10, 10, 11, 12)))

    def _high_bits(self, parent: list[Node], i: int, n: Node) -> None:
        n.raw = self.rng.choice((over_64_bits(), varint(U64 - 1), varint(1 << 63), b"\xff" * 9 + b"\x02"))

    def _out_of_range(self, parent: list[Node], i: int, n: Node) -> None:
        n.raw = self.rng.choice((varint(1 << 32), varint(U64 - 1), varint(1 << 40), varint(-(1 << 40))))

    def _duplicate(self, parent: list[Node], i: int, n: Node) -> None:
        parent.insert(i + 1, _copy(n))

    def _drop(self, parent: list[Node], i: int, n: Node) -> None:
        del parent[i]

    def _nest_any(self, parent: list[Node], i: int, n: Node) -> None:
        depth = self.rng.choice((1, 5, MAX_ANY_DEPTH - 1, MAX_ANY_DEPTH, MAX_ANY_DEPTH + 1, 40, 100))
        kind = self.rng.choice(("array", "kvlist"))
        n.raw, n.children = nested_any(depth, kind, _body(n)), None

    def _truncate_value(self, parent: list[Node], i: int, n: Node) -> None:
        n.raw, n.children = _body(n)[:self.rng.randrange(len(_body(n)))], None

    def _bad_length(self, parent: list[Node], i: int, n: Node) -> None:
        n.length_delta = self.rng.choice((-3, -1, 1, 2, 1 << 20))

    def _swap_lengths(self, parent: list[Node], i: int, n: Node) -> None:
        a, b = self.rng.sample([c for c in n.children or [] if c.wt == 2], 2)
        la, lb = len(_body(a)), len(_body(b))
        a.length_delta, b.length_delta = lb - la, la - lb

    def _long_tag(self, parent: list[Node], i: int, n: Node) -> None:
        n.tag_width = self.rng.choice((5, 10, 11))


_32_BIT = frozenset((_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_UINT32, _FD.TYPE_ENUM))


def _is_32_bit_varint(n: Node) -> bool:
    return n.wt == 0 and n.fdesc is not None and n.fdesc.type in _32_BIT


def _has_two_len_children(n: Node) -> bool:
    return n.wt == 2 and n.children is not None and sum(1 for c in n.children if c.wt == 2) >= 2


def _body(n: Node) -> bytes:
    return encode(n.children) if n.children is not None else n.raw


def _copy(n: Node) -> Node:
    children = [_copy(c) for c in n.children] if n.children is not None else None
    return Node(n.num, n.wt, n.raw, n.fdesc, children, n.length_delta, n.tag_width)


# --- JSON mutations -------------------------------------------------------------------------

_JSON_ODDITIES: tuple[Any, ...] = (
    "NaN", "Infinity", "-0", -0.0, 1e308, "1e400", 2**64, -(2**63) - 1, "18446744073709551616", "0x10",
    True, None, [], {}, "", "zz", 3.5, "\ud800",
)


def mutate_json(rng: random.Random, doc: Any) -> tuple[Any, str]:
    """One mutation of a parsed OTLP/JSON document in place: wrong types, deep nesting, huge
    numbers, -0, NaN strings, dropped keys. Returns (document, mutation name)."""
    paths: list[tuple[Any, Any]] = []

    def visit(v: Any) -> None:
        if isinstance(v, dict):
            for k in list(v):
                paths.append((v, k))
                visit(v[k])
        elif isinstance(v, list):
            for i in range(len(v)):
                paths.append((v, i))
                visit(v[i])

    visit(doc)
    if not paths:
        return doc, "none"
    parent, key = rng.choice(paths)
    roll = rng.random()
    if roll < 0.5:
        parent[key] = rng.choice(_JSON_ODDITIES)
        return doc, "json_value"
    if roll < 0.7:
        depth = rng.choice((MAX_ANY_DEPTH, MAX_ANY_DEPTH + 1, 100))
        value: Any = {"intValue": "1"}
        for _ in range(depth):
            value = {"arrayValue": {"values": [value]}} if rng.random() < 0.5 else \
                {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        anys = [(p, k) for p, k in paths if isinstance(p, dict) and k == "value"]
        p, k = rng.choice(anys) if anys else (parent, key)
        p[k] = value
        return doc, f"json_nest_{depth}"
    if roll < 0.85 and isinstance(parent, dict):
        del parent[key]
        return doc, "json_drop"
    parent[key] = [parent[key]] if rng.random() < 0.5 else {"v": parent[key]}
    return doc, "json_wrap"


def json_items(signal: Signal, doc: Any) -> int | None:
    """Items in an OTLP/JSON request document when it has the expected shape, else None."""
    keys = {Signal.TRACES: ("resourceSpans", "scopeSpans", "spans"),
            Signal.LOGS: ("resourceLogs", "scopeLogs", "logRecords"),
            Signal.METRICS: ("resourceMetrics", "scopeMetrics", "metrics")}[signal]
    try:
        n = 0
        for rx in doc.get(keys[0], []):
            for sx in rx.get(keys[1], []):
                for item in sx.get(keys[2], []):
                    n += json_points(item) if signal is Signal.METRICS else 1
        return n
    except (AttributeError, TypeError):
        return None


_DATA_KEYS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


def json_points(metric: Any) -> int:
    """Data points of one OTLP/JSON metric."""
    points = (metric[k].get("dataPoints") for k in _DATA_KEYS if isinstance(metric.get(k), dict))
    return sum(len(p) for p in points if isinstance(p, list))  # a mutant may hold "1e400" there


# --- sending: one answer shape over OTLP/HTTP protobuf, OTLP/HTTP JSON and OTLP/gRPC ----------

TRANSPORTS = ("http-pb", "http-json", "grpc")
GRPC_PATH = {Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
             Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
             Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"}
_RESPONSES: dict[Signal, Any] = {Signal.TRACES: ExportTraceServiceResponse,
                                 Signal.LOGS: ExportLogsServiceResponse,
                                 Signal.METRICS: ExportMetricsServiceResponse}
_REJECTED_JSON = {Signal.TRACES: "rejectedSpans", Signal.LOGS: "rejectedLogRecords",
                  Signal.METRICS: "rejectedDataPoints"}
_SERVER_FAULTS = frozenset((grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
                            grpc.StatusCode.UNIMPLEMENTED))


@dataclass
class Answer:
    """A gateway's answer to one Export request, whatever the transport."""

    transport: str
    http_status: int | None = None
    grpc_code: grpc.StatusCode | None = None
    rejected: int = 0
    message: str = ""
    retry_hint: bool = False  # Retry-After header or google.rpc.RetryInfo
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.http_status == 200 or self.grpc_code == grpc.StatusCode.OK

    @property
    def server_fault(self) -> bool:
        """A 5xx other than 503 (a capacity answer), or a gRPC INTERNAL/UNKNOWN-like code."""
        if self.http_status is not None:
            return self.http_status >= 500 and self.http_status != 503
        return self.grpc_code in _SERVER_FAULTS

    @property
    def invalid_argument(self) -> bool:
        return self.http_status == 400 or self.grpc_code == grpc.StatusCode.INVALID_ARGUMENT

    @property
    def too_large(self) -> bool:
        """413, or gRPC RESOURCE_EXHAUSTED / INVALID_ARGUMENT, in both cases without a retry hint."""
        if self.retry_hint:
            return False
        return self.http_status == 413 or self.grpc_code in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                             grpc.StatusCode.INVALID_ARGUMENT)

    def __str__(self) -> str:
        code = self.http_status if self.http_status is not None else self.grpc_code
        return f"{self.transport} {code} rejected={self.rejected} {self.message[:300]!r}"


class Client:
    """Sends raw Export bodies to one gateway; one keep-alive HTTP connection and one gRPC
    channel, so use one Client per thread."""

    def __init__(self, host: str, http_port: int, grpc_target: str, timeout: float = 30.0) -> None:
        self.host, self.http_port, self.timeout = host, http_port, timeout
        self._conn: http.client.HTTPConnection | None = None
        self._channel = grpc.insecure_channel(grpc_target, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._channel.close()

    def send(self, signal: Signal, transport: str, body: bytes, headers: Mapping[str, str] | None = None,
             gzip_it: bool = False) -> Answer:
        started = time.monotonic()
        if transport == "grpc":
            answer = self._grpc(signal, body, headers or {}, gzip_it)
        else:
            answer = self._http(signal, transport, body, headers or {}, gzip_it)
        answer.seconds = time.monotonic() - started
        return answer

    def _http(self, signal: Signal, transport: str, body: bytes, headers: Mapping[str, str],
              gzip_it: bool) -> Answer:
        ctype = "application/json" if transport == "http-json" else "application/x-protobuf"
        hdrs = {"content-type": ctype, **headers}
        if gzip_it:
            hdrs["content-encoding"] = "gzip"
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.http_port, timeout=self.timeout)
            try:
                self._conn.request("POST", f"/v1/{signal.value}", body=body, headers=hdrs)
                resp = self._conn.getresponse()
                data = resp.read()
                status, rh = resp.status, {k.lower(): v for k, v in resp.getheaders()}
                if rh.get("connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt:
                    raise
        answer = Answer(transport, http_status=status, retry_hint="retry-after" in rh)
        if transport == "http-json":
            doc = json.loads(data) if data else {}
            if status == 200:
                partial = doc.get("partialSuccess", {})
                answer.rejected = int(partial.get(_REJECTED_JSON[signal], 0))
                answer.message = partial.get("errorMessage", "")
            else:
                answer.message = str(doc.get("message", ""))
        elif status == 200:
            answer.rejected, answer.message = _partial(signal, data)
        else:
            st = status_pb2.Status()
            st.ParseFromString(data)
            answer.message = st.message
        return answer

    def _grpc(self, signal: Signal, body: bytes, headers: Mapping[str, str], gzip_it: bool) -> Answer:
        call = self._channel.unary_unary(GRPC_PATH[signal])  # no (de)serializers: raw bytes both ways
        try:
            out: bytes = call(body, metadata=tuple(headers.items()), timeout=self.timeout,
                              compression=grpc.Compression.Gzip if gzip_it else None)
        except grpc.RpcError as exc:
            trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
            retry = False
            details = trailers.get("grpc-status-details-bin")
            if isinstance(details, bytes):
                st = status_pb2.Status()
                st.ParseFromString(details)
                retry = any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in st.details)
            return Answer("grpc", grpc_code=exc.code(), message=exc.details() or "",  # type: ignore[attr-defined]
                          retry_hint=retry)
        rejected, message = _partial(signal, out)
        return Answer("grpc", grpc_code=grpc.StatusCode.OK, rejected=rejected, message=message)


def _partial(signal: Signal, data: bytes) -> tuple[int, str]:
    resp = _RESPONSES[signal]()
    resp.ParseFromString(data)
    ps = resp.partial_success
    return int(getattr(ps, REJECTED_FIELD[signal])), str(ps.error_message)


def sink_counts(lines: list[dict[str, Any]], signal: Signal, key: str) -> dict[str, int]:
    """Items per value of the resource attribute ``key`` in file-sink lines (OTLP/JSON)."""
    rx_key, sx_key, item_key = {Signal.TRACES: ("resourceSpans", "scopeSpans", "spans"),
                                Signal.LOGS: ("resourceLogs", "scopeLogs", "logRecords"),
                                Signal.METRICS: ("resourceMetrics", "scopeMetrics", "metrics")}[signal]
    out: dict[str, int] = {}
    for line in lines:
        for rx in line.get(rx_key, []):
            value = ""
            for kv in rx.get("resource", {}).get("attributes", []):
                if kv.get("key") == key:
                    value = str(next(iter(kv.get("value", {}).values()), ""))
            n = 0
            for sx in rx.get(sx_key, []):
                for item in sx.get(item_key, []):
                    n += json_points(item) if signal is Signal.METRICS else 1
            out[value] = out.get(value, 0) + n
    return out


def process_tree_rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """Sum of ``field_name`` (VmRSS, VmHWM) over ``pid`` and all its descendants, in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
