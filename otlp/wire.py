"""Protobuf wire format over bytes: walk, enrich, count and split OTLP Export requests.

Why not decode: an Export*ServiceRequest is ``repeated ResourceX resource_x = 1``, and the
gateway only needs to touch each ResourceX's ``resource`` and count the items below it
(docs/architecture.md principle 1). Walking tags and lengths is cheaper than materialising every span
with its attributes just to serialise it again, and it keeps unknown fields byte-for-byte.

Message shapes used here (field numbers from opentelemetry-proto):

- ResourceX: 1 resource, 2 scope_x, 3 schema_url
- ScopeX: 1 scope, 2 items (spans / log_records / metrics), 3 schema_url
- Metric: 5 gauge, 7 sum, 9 histogram, 10 exponential_histogram, 11 summary; each has
  ``repeated data_points = 1``
- Resource: 1 attributes (KeyValue: 1 key, 2 value AnyValue: 1 string_value)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from otlp import validate
from otlp.signals import Signal

__all__ = ["Prepared", "TooManyItems", "WireError", "encode_attributes", "encode_varint", "group_resources",
           "group_spans", "prepare", "read_varint", "split", "split_spans_by_trace_id"]

K = TypeVar("K", bound=Hashable)
_LEN = 2  # wire type of length-delimited fields
_METRIC_DATA_FIELDS = frozenset((5, 7, 9, 10, 11))


class WireError(ValueError):
    """The payload is not a well-formed protobuf message; the text names the field path."""


@dataclass(slots=True)
class Prepared:
    """A request after enrichment, with what a receiver needs for its answer and metrics."""

    payload: bytes
    items: int
    rejected_items: int
    error: str


# --- low-level reading ----------------------------------------------------------------------


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a base-128 varint at ``pos``; return (value, position after it)."""
    result = 0
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")
    raise WireError("truncated varint")


def _skip(buf: bytes, pos: int, end: int, wt: int) -> int:
    """Position after a value of wire type ``wt`` that starts at ``pos``."""
    if wt == 0:
        _, pos = read_varint(buf, pos, end)
        return pos
    if wt == _LEN:
        ln, pos = read_varint(buf, pos, end)
        pos += ln
    elif wt == 1:
        pos += 8
    elif wt == 5:
        pos += 4
    else:
        raise WireError(f"unsupported wire type {wt}")
    if pos > end:
        raise WireError("length past the end of the message")
    return pos


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """Every field of a message as (number, wire type, field start, value start, value end).

    For length-delimited fields the value span excludes the length prefix, so it is the
    embedded message's body.
    """
    out = []
    while pos < end:
        start = pos
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(buf, pos, end)
        num = tag >> 3
        wt = tag & 7
        if num == 0:
            raise WireError("field number 0")
        if wt == _LEN:
            ln = buf[pos] if pos < end else 0x80
            if ln < 0x80:
                pos += 1
            else:
                ln, pos = read_varint(buf, pos, end)
            vstart = pos
            pos += ln
            if pos > end:
                raise WireError(f"field {num}: length {ln} past the end of the message")
        else:
            vstart = pos
            try:
                pos = _skip(buf, pos, end, wt)
            except WireError as e:
                raise WireError(f"field {num}: {e}") from None
        out.append((num, wt, start, vstart, pos))
    return out


def top_level_fields(buf: bytes) -> list[bytes]:
    """Each top-level field of a message with its tag, so each is a message of the same type on
    its own: for an Export request, one ResourceX as a request of its own."""
    return [buf[start:end] for _num, _wt, start, _vs, end in _fields(buf, 0, len(buf))]


class TooManyItems(WireError):
    """The request holds more items than the caller allows; counting stopped at the limit.

    ``items`` is how many items it is known to hold at least (0 when not counted)."""

    def __init__(self, message: str, items: int = 0) -> None:
        super().__init__(message)
        self.items = items


class _Counted(WireError):
    """A malformed message, with how many items were counted before the fault (including a
    broken one), so a dropped ResourceX reports what the client loses."""

    def __init__(self, message: str, items: int) -> None:
        super().__init__(message)
        self.items = items


def _count(buf: bytes, pos: int, end: int, want: int, limit: int = 1 << 62) -> int:
    """Number of length-delimited fields numbered ``want`` in a message, checking its framing.

    This is the per-item loop of the ingest path (one turn per span), so the common case (a
    one-byte tag, a length of one or two bytes) is read inline without a call. Raises
    _Counted, or TooManyItems once more than ``limit`` items are seen (so a body of millions of
    empty items costs no more than the limit).
    """
    n = 0
    want_tag = want << 3 | _LEN
    try:
        while pos < end:
            tag = buf[pos]
            if tag == want_tag and pos + 2 < end:
                n += 1
                if n > limit:
                    raise TooManyItems(f"more than {limit} items")
                ln = buf[pos + 1]
                if ln < 0x80:
                    pos += 2 + ln
                else:
                    b2 = buf[pos + 2]
                    if b2 < 0x80:
                        ln = (ln & 0x7F) | b2 << 7
                        pos += 3 + ln
                    else:
                        ln, pos = read_varint(buf, pos + 1, end)
                        pos += ln
                if pos > end:
                    raise WireError(f"field {want}: length {ln} past the end of the message")
                continue
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(buf, pos, end)
            wt = tag & 7
            if tag >> 3 == 0:
                raise WireError("field number 0")
            if wt == _LEN and tag >> 3 == want:
                n += 1
                if n > limit:
                    raise TooManyItems(f"more than {limit} items")
            try:
                pos = _skip(buf, pos, end, wt)
            except WireError as e:
                raise WireError(f"field {tag >> 3}: {e}") from None
    except TooManyItems:
        raise
    except WireError as e:
        raise _Counted(str(e), n) from None
    return n


# --- low-level writing ----------------------------------------------------------------------


def _encode_varint(v: int) -> bytes:
    if v < 0:
        raise ValueError("varints here are unsigned; mask negative int64 values to 64 bits first")
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# Lengths and small numbers, which are nearly all varints written, come from a table.
_SMALL_VARINTS = tuple(_encode_varint(i) for i in range(4096))


def encode_varint(v: int) -> bytes:
    """Base-128 varint of a non-negative integer."""
    if 0 <= v < 4096:
        return _SMALL_VARINTS[v]
    return _encode_varint(v)


def _len_field(num: int, body: bytes) -> bytes:
    return encode_varint(num << 3 | _LEN) + encode_varint(len(body)) + body


def encode_attributes(attrs: Sequence[tuple[str, str]]) -> bytes:
    """``Resource.attributes`` entries (field 1 each) with string values, ready to append."""
    out = b""
    for key, value in attrs:
        any_value = _len_field(1, value.encode())
        out += _len_field(1, _len_field(1, key.encode()) + _len_field(2, any_value))
    return out


# --- prepare --------------------------------------------------------------------------------


def _kv_key(buf: bytes, pos: int, end: int) -> bytes | None:
    """The ``key`` of a KeyValue body; the last occurrence wins, as in any protobuf parser."""
    key = None
    for num, wt, _s, vs, ve in _fields(buf, pos, end):
        if num == 1 and wt == _LEN:
            key = buf[vs:ve]
    return key


def _resource_body(buf: bytes, spans: list[tuple[int, int]], drop_keys: frozenset[bytes],
                   ours: bytes) -> bytes:
    """One Resource body from every ``resource`` occurrence, minus ``drop_keys``, plus ``ours``.

    Several occurrences of a message field merge (repeated attributes concatenate), so
    concatenating their bodies is what a decoder would see.
    """
    parts: list[bytes] = []
    for vs, ve in spans:
        if not any(k in buf[vs:ve] for k in drop_keys):
            _fields(buf, vs, ve)  # framing check only
            parts.append(buf[vs:ve])
            continue
        for num, wt, s, fvs, fve in _fields(buf, vs, ve):
            if num == 1 and wt == _LEN:
                try:
                    key = _kv_key(buf, fvs, fve)
                except WireError as e:
                    raise WireError(f"attributes: {e}") from None
                if key in drop_keys:
                    continue
            parts.append(buf[s:fve])
    parts.append(ours)
    return b"".join(parts)


def _count_metrics(buf: bytes, pos: int, end: int, limit: int) -> int:
    """Data points in every Metric of a ScopeMetrics body (TooManyItems past ``limit``)."""
    n = 0
    index = 0
    try:
        fields = _fields(buf, pos, end)
    except WireError as e:
        raise _Counted(str(e), 0) from None
    for num, wt, _s, vs, ve in fields:
        if num != 2 or wt != _LEN:
            continue
        try:
            for dnum, dwt, _ds, dvs, dve in _fields(buf, vs, ve):
                if dnum in _METRIC_DATA_FIELDS and dwt == _LEN:
                    n += _count(buf, dvs, dve, 1, limit - n)
        except TooManyItems:
            raise TooManyItems(f"more than {limit} items") from None
        except _Counted as e:
            raise _Counted(f"metrics[{index}]: {e}", n + e.items) from None
        except WireError as e:
            raise _Counted(f"metrics[{index}]: {e}", n) from None
        index += 1
    return n


def _count_scope(signal: Signal, buf: bytes, pos: int, end: int, limit: int) -> int:
    """Items in a ScopeX body; errors name the path below the ScopeX."""
    if signal.spec.counts_data_points:
        return _count_metrics(buf, pos, end, limit)
    try:
        return _count(buf, pos, end, 2, limit)
    except _Counted as e:
        raise _Counted(f"{signal.spec.item_field}: {e}", e.items) from None


def prepare(signal: Signal, payload: bytes, attrs: Sequence[tuple[str, str]], *,
            max_items: int | None = None, check: bool = True) -> Prepared:
    """Enrich every ResourceX with ``attrs`` (replacing client values) and count the items.

    A malformed envelope raises WireError (the whole request is refused); a ResourceX that is
    framed correctly but malformed inside, or that a sink could not decode
    (``validate.check_resource``: UTF-8, varints, nesting), is dropped and reported as a partial
    success, so one bad resource does not cost a client the rest of its batch. More than
    ``max_items`` items in the request (good or bad) raises TooManyItems as soon as counting
    passes the limit. ``check=False`` skips the content check, for bytes that were checked
    before (a batch being split).
    """
    buf = bytes(payload)
    view = memoryview(buf)  # slices of it are copied once, by the final join
    drop_keys = frozenset(k.encode() for k, _ in attrs)
    ours = encode_attributes(attrs)
    rx_name = signal.spec.resource_field
    try:
        top = _fields(buf, 0, len(buf))
    except WireError as e:
        raise WireError(f"{_request_name(signal)}: {e}") from None
    out: list[bytes | memoryview] = []
    items = 0
    rejected = 0
    errors: list[str] = []
    index = 0
    budget = (1 << 62) if max_items is None else max_items
    for num, wt, s, vs, ve in top:
        if num != 1:
            fault = validate.check_export_fields(signal, view[s:ve]) if check else None
            if fault:  # the envelope itself: no decoder would take the request
                raise WireError(f"{_request_name(signal)}: {fault}")
            out.append(view[s:ve])  # unknown top-level field (a newer OTLP): keep it
            continue
        if wt != _LEN:
            raise WireError(f"{_request_name(signal)}: {rx_name} has wire type {wt}, expected 2")
        if vs - s > 6 and check and _long_head(buf, s, vs):
            raise WireError(f"{_request_name(signal)}: {rx_name} tag or length longer than 5 bytes")
        try:
            body, size, n = _prepare_rx(signal, buf, view, vs, ve, drop_keys, ours,
                                        budget - items - rejected, check)
        except TooManyItems:
            raise TooManyItems(f"{_request_name(signal)} holds more than {max_items} items",
                               items=budget + 1) from None
        except _Counted as e:
            rejected += e.items
            errors.append(f"{rx_name}[{index}].{e}")
        else:
            out.append(b"\x0a" + encode_varint(size))
            out.extend(body)
            items += n
        index += 1
    error = ""
    if errors:
        error = f"dropped {len(errors)} malformed {rx_name}: " + "; ".join(errors[:5])
        if len(errors) > 5:
            error += f"; and {len(errors) - 5} more"
    return Prepared(b"".join(out), items, rejected, error)


def _long_head(buf: bytes, start: int, value_start: int) -> bool:
    """Whether a field's tag or length takes more than 5 bytes: upb refuses such a request, so
    the edge does too, though the ResourceX is written again with a canonical head."""
    _tag, after_tag = read_varint(buf, start, value_start)
    return after_tag - start > 5 or value_start - after_tag > 5


def _prepare_rx(signal: Signal, buf: bytes, view: memoryview, pos: int, end: int,
                drop_keys: frozenset[bytes], ours: bytes, limit: int,
                check: bool) -> tuple[list[bytes | memoryview], int, int]:
    """The enriched ResourceX body as parts, its size, and its item count.

    Raises _Counted naming the first fault, after counting every item it can (including
    those of well-formed scopes after the fault), since all of them are dropped; TooManyItems
    once more than ``limit`` items are counted.

    With ``check``, the content check (C) counts the items as it goes; only when it finds a
    fault does the walk below count them again, to name a framing fault precisely and to say how
    many items the client loses.
    """
    checked: int | None = None
    content_fault = ""
    if check:
        checked, found = validate.check_and_count(signal, view[pos:end], limit)
        if found is validate.TOO_MANY:
            raise TooManyItems(f"more than {limit} items")
        if found is not None:
            checked, content_fault = None, found
    n = 0
    sx_name = signal.spec.scope_field
    try:
        fields = _fields(buf, pos, end)
    except WireError as e:
        raise _Counted(str(e), 0) from None
    resources: list[tuple[int, int]] = []
    rest: list[bytes | memoryview] = [b""]
    size = 0
    scope_index = 0
    fault = ""
    for num, wt, s, vs, ve in fields:
        if num == 1:
            if wt != _LEN:
                fault = fault or f"resource: wire type {wt}, expected 2"
            resources.append((vs, ve))
            continue
        if num == 2:
            if wt != _LEN:
                fault = fault or f"{sx_name}[{scope_index}]: wire type {wt}, expected 2"
            elif checked is None:
                try:
                    n += _count_scope(signal, buf, vs, ve, limit - n)
                except _Counted as e:
                    fault = fault or f"{sx_name}[{scope_index}].{e}"
                    n += e.items
            scope_index += 1
        rest.append(view[s:ve])
        size += ve - s
    if fault or content_fault:
        raise _Counted(fault or content_fault, n)
    if checked is not None:
        n = checked
    try:
        resource = _resource_body(buf, resources, drop_keys, ours)
    except WireError as e:
        raise _Counted(f"resource: {e}", n) from None
    rest[0] = b"\x0a" + encode_varint(len(resource)) + resource
    return rest, size + len(rest[0]), n


def _request_name(signal: Signal) -> str:
    return signal.spec.request_name


# --- split ----------------------------------------------------------------------------------

# Which fields of a message hold children that may be spread over several copies of it.
# None: the field's messages are indivisible items.
_Spec = dict[int, "_Spec | None"]
_POINTS: _Spec = {1: None}
_ITEMS: _Spec = {2: None}
_METRIC_POINTS: _Spec = {2: dict.fromkeys(_METRIC_DATA_FIELDS, _POINTS)}


def _split_spec(signal: Signal) -> _Spec:
    """Export request -> ResourceX (1) -> ScopeX (2) -> items (2), down to data points for metrics."""
    return {1: {2: _METRIC_POINTS if signal.spec.counts_data_points else _ITEMS}}


def split(signal: Signal, payload: bytes, max_bytes: int) -> list[bytes]:
    """Valid requests of at most ``max_bytes`` each that together hold every item of ``payload``.

    Cuts at ResourceX boundaries first, then ScopeX, then items (metrics: data points); every
    piece repeats its resource and scope. One item that cannot fit even alone comes out as a
    piece of its own, larger than ``max_bytes``, so the caller can refuse and count it.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    buf = bytes(payload)
    if len(buf) <= max_bytes:
        return [buf] if buf else []
    try:
        return _split(buf, memoryview(buf), 0, len(buf), _split_spec(signal), max_bytes)
    except WireError as e:
        raise WireError(f"{_request_name(signal)}: {e}") from None


def _varint_size(v: int) -> int:
    return max(1, (v.bit_length() + 6) // 7)


def _split(buf: bytes, view: memoryview, pos: int, end: int, spec: _Spec, limit: int) -> list[bytes]:
    """Bodies of copies of the message at buf[pos:end], each at most ``limit`` bytes if possible."""
    if end - pos <= limit:
        return [buf[pos:end]]
    header: list[bytes] = []
    children: list[bytes | memoryview] = []
    fields = _fields(buf, pos, end)
    head_len = sum(ve - s for num, wt, s, _vs, ve in fields if not (num in spec and wt == _LEN))
    for num, wt, s, vs, ve in fields:
        if not (num in spec and wt == _LEN):
            header.append(buf[s:ve])
            continue
        sub = spec[num]
        tag = encode_varint(num << 3 | _LEN)
        room = limit - head_len - len(tag) - _varint_size(limit)
        if sub is None or ve - s + head_len <= limit or room <= 0:
            children.append(view[s:ve])
        else:
            children.extend(tag + encode_varint(len(b)) + b for b in _split(buf, view, vs, ve, sub, room))
    head = b"".join(header)
    pieces: list[bytes] = []
    current: list[bytes | memoryview] = [head]
    size = len(head)
    for child in children:
        if len(current) > 1 and size + len(child) > limit:
            pieces.append(b"".join(current))
            current = [head]
            size = len(head)
        current.append(child)
        size += len(child)
    if len(current) > 1 or not pieces:
        pieces.append(b"".join(current))
    return pieces


# --- split by trace id ----------------------------------------------------------------------


def _trace_id(buf: bytes, pos: int, end: int) -> bytes:
    """A Span's trace_id (field 1) wherever it is; the last occurrence wins.

    ``prepare`` checks the framing of spans but not their insides, so a span that cannot be
    walked gets the empty trace id rather than failing the batch it shares with others.
    """
    trace_id = b""
    try:
        for num, wt, _s, vs, ve in _fields(buf, pos, end):
            if num == 1 and wt == _LEN:
                trace_id = buf[vs:ve]
    except WireError:
        return b""
    return trace_id


def split_spans_by_trace_id(payload: bytes) -> dict[bytes, bytes]:
    """trace_id -> an ExportTraceServiceRequest holding only that trace's spans.

    Each ResourceSpans/ScopeSpans around a span is repeated in that trace's request, so a
    consumer of one Kafka partition sees whole, valid requests.
    """
    return group_spans(payload, _same)


def _field_end(buf: bytes, pos: int, end: int) -> int:
    """Position after the field whose tag starts at ``pos``."""
    tag, pos = read_varint(buf, pos, end)
    if tag >> 3 == 0:
        raise WireError("field number 0")
    return _skip(buf, pos, end, tag & 7)


def _same(trace_id: bytes) -> bytes:
    return trace_id


def group_spans(payload: bytes, group_of: Callable[[bytes], K]) -> dict[K, bytes]:
    """``group_of(trace_id)`` -> an ExportTraceServiceRequest holding only the spans of that group.

    Each ResourceSpans/ScopeSpans around a span is repeated (once) in every group that has one
    of its spans, and spans keep their order within a group, so each group's request is whole
    and valid. A span whose insides cannot be walked has the empty trace id. Top-level fields
    other than ``resource_spans`` (none in OTLP today) are not carried. Raises WireError when
    the framing down to the spans is broken.
    """
    buf = bytes(payload)
    view = memoryview(buf)
    # group -> resource index -> (resource header, [scope fields holding that group's spans])
    groups: dict[K, dict[int, tuple[bytes, list[bytes]]]] = {}
    group_for: dict[bytes, K] = {}  # spans of a trace come in runs: one group_of call per trace
    try:
        top = _fields(buf, 0, len(buf))
        for ri, (num, wt, _s, vs, ve) in enumerate(top):
            if num != 1 or wt != _LEN:
                continue
            rfields = _fields(buf, vs, ve)
            rhead = b"".join(buf[s:e] for n, w, s, _v, e in rfields if not (n == 2 and w == _LEN))
            for n, w, _ss, svs, sve in rfields:
                if n != 2 or w != _LEN:
                    continue
                # The spans are most of the bytes: walked inline, not through _fields.
                head: list[bytes] = []
                in_scope: dict[K, list[memoryview]] = {}
                pos = svs
                while pos < sve:
                    start = pos
                    if buf[pos] != 0x12:  # not a span (field 2, length-delimited): part of the header
                        pos = _field_end(buf, pos, sve)
                        head.append(buf[start:pos])
                        continue
                    length = buf[pos + 1]
                    pos += 2
                    if length >= 0x80:
                        length, pos = read_varint(buf, pos - 1, sve)
                    body = pos
                    pos += length
                    if pos > sve:
                        raise WireError(f"field 2: length {length} past the end of the message")
                    if length >= 18 and buf[body] == 0x0A and buf[body + 1] == 16:
                        # SDKs write trace_id first; a repeated one later only moves the span
                        # to another partition, it cannot corrupt it
                        trace_id = buf[body + 2:body + 18]
                    else:
                        trace_id = _trace_id(buf, body, pos)
                    try:
                        group = group_for[trace_id]
                    except KeyError:
                        group = group_for[trace_id] = group_of(trace_id)
                    spans = in_scope.get(group)
                    if spans is None:
                        spans = in_scope[group] = []
                    spans.append(view[start:pos])
                shead = b"".join(head)
                for group, spans in in_scope.items():
                    per_rx = groups.get(group)
                    if per_rx is None:
                        per_rx = groups[group] = {}
                    rx = per_rx.get(ri)
                    if rx is None:
                        rx = per_rx[ri] = (rhead, [])
                    rx[1].append(_len_field(2, shead + b"".join(spans)))
    except IndexError:
        raise WireError("ExportTraceServiceRequest: truncated field") from None
    except WireError as e:
        raise WireError(f"ExportTraceServiceRequest: {e}") from None
    return {group: b"".join(_len_field(1, rhead + b"".join(scopes)) for rhead, scopes in per_rx.values())
            for group, per_rx in groups.items()}


# --- group whole resources ------------------------------------------------------------------


def group_resources(payload: bytes, keys: frozenset[bytes],
                    group_of: Callable[[dict[bytes, bytes]], K]) -> dict[K, bytes]:
    """``group_of(attributes)`` -> an Export request holding the whole ResourceX of that group.

    ``attributes`` maps each resource attribute key in ``keys`` that the resource has to its
    AnyValue body (the last occurrence wins, as in a decoder); the others are not read. Each
    ResourceX is copied whole and in order, so a group's request is valid. Top-level fields other
    than ResourceX (none in OTLP today) go with the first group. Raises WireError when the
    framing down to the resource attributes is broken.

    The reference for ``_otlpcheck.metric_buckets``, the C walk of the metrics case
    (``otlp.partitioning``): a change here changes it too (tests/unit/test_metric_buckets_c.py).
    """
    buf = bytes(payload)
    view = memoryview(buf)
    groups: dict[K, list[memoryview]] = {}
    others: list[memoryview] = []
    try:
        for num, wt, s, vs, ve in _fields(buf, 0, len(buf)):
            if num != 1 or wt != _LEN:
                others.append(view[s:ve])
                continue
            group = group_of(_resource_attributes(buf, vs, ve, keys))
            pieces = groups.get(group)
            if pieces is None:
                pieces = groups[group] = []
            pieces.append(view[s:ve])
    except WireError as e:
        raise WireError(f"resource attributes: {e}") from None
    out = {group: b"".join(pieces) for group, pieces in groups.items()}
    if others and out:
        first = next(iter(out))
        out[first] = b"".join(others) + out[first]
    return out


def _resource_attributes(buf: bytes, pos: int, end: int, keys: frozenset[bytes]) -> dict[bytes, bytes]:
    """Attributes named in ``keys`` of every ``resource`` of a ResourceX body: key -> AnyValue body."""
    found: dict[bytes, bytes] = {}
    for num, wt, _s, vs, ve in _fields(buf, pos, end):
        if num != 1 or wt != _LEN:
            continue
        body = buf[vs:ve]
        if not any(k in body for k in keys):
            continue
        for anum, awt, _as, avs, ave in _fields(buf, vs, ve):
            if anum != 1 or awt != _LEN:
                continue
            if ave - avs > 2 and buf[avs] == 0x0A and buf[avs + 1] < 0x80 \
                    and buf[avs + 2:avs + 2 + buf[avs + 1]] not in keys:
                continue  # SDKs write the key first: another attribute, not walked
            key = value = None
            for knum, kwt, _ks, kvs, kve in _fields(buf, avs, ave):
                if knum == 1 and kwt == _LEN:
                    key = buf[kvs:kve]
                elif knum == 2 and kwt == _LEN:
                    value = buf[kvs:kve]
            if key in keys:
                found[key] = value or b""
    return found
