"""Isolating the parts of an OTLP Export request that do not decode, so the rest still goes on.

A consumed record joins several acknowledged client requests of one tenant (the batcher
concatenates them), so one span name that is not UTF-8 (proto3 strings must be, and the
protobuf runtime refuses the whole message) must not cost the spans of the other requests.
``isolate`` decodes the whole request when it can (the common case, one decode); otherwise it
walks the wire format, which is the same for the three signals:

- ``Export*ServiceRequest``: field 1 repeated ``Resource{Spans,Logs,Metrics}`` (a "ResourceX");
- ResourceX: 1 ``resource``, 2 repeated ScopeX, 3 ``schema_url``;
- ScopeX: 1 ``scope``, 2 repeated items (spans, log records, metrics), 3 ``schema_url``;

and decodes each ResourceX alone, then, for one that fails, its resource and scope context
without items, then each item alone *with* that context (a request of one item). What fails is
a bad part: a whole ResourceX when its resource does not decode, a whole ScopeX when its scope
does not, else the single item. Each part's bytes are a valid-framed Export request of its own,
so a dead-lettered part can be replayed once fixed.

Positions: every item takes the position it has in the whole request (wire order), also when
it sits in a bad part, so the ids a sink derives from them (Elasticsearch ``_id``) are the same
whether the record decodes whole or part by part, on every retry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError

from otlp.wire import WireError, encode_varint, read_varint, top_level_fields

M = TypeVar("M")

_CONTEXT_FIELD = 1  # ResourceX.resource, ScopeX.scope
_CHILD_FIELD = 2  # ResourceX.scope_x, ScopeX.items
_LEN = 2  # wire type of length-delimited fields


@dataclass(frozen=True, slots=True)
class BadPart:
    """A part that does not decode: its bytes (an Export request of its own), why, how many items."""

    value: bytes
    reason: str
    items: int


@dataclass(slots=True)
class Isolated(Generic[M]):
    """``good``: (position of the part's first item, decoded request), in wire order; ``bad``:
    the parts that do not decode. ``whole`` is True when the request decoded in one piece."""

    good: list[tuple[int, M]] = field(default_factory=list)
    bad: list[BadPart] = field(default_factory=list)
    whole: bool = False


def _split_field(raw: bytes) -> tuple[int, bytes | None]:
    """(field number, body) of one encoded field; the body is None unless it is length-delimited."""
    tag, pos = read_varint(raw, 0, len(raw))
    if tag & 7 != _LEN:
        return tag >> 3, None
    size, pos = read_varint(raw, pos, len(raw))
    return tag >> 3, raw[pos:pos + size]


def _len_field(num: int, body: bytes) -> bytes:
    return encode_varint(num << 3 | _LEN) + encode_varint(len(body)) + body


def _request(r_context: Sequence[bytes], s_context: Sequence[bytes], entries: Sequence[bytes]) -> bytes:
    """An Export request of one ResourceX with one ScopeX holding ``entries`` (item bodies)."""
    scope = b"".join(s_context) + b"".join(_len_field(_CHILD_FIELD, e) for e in entries)
    return _len_field(1, b"".join(r_context) + _len_field(_CHILD_FIELD, scope))


def _children(body: bytes) -> tuple[list[bytes], list[bytes]]:
    """(the fields other than field 2, the field-2 children's bodies) of a ResourceX or ScopeX."""
    context: list[bytes] = []
    children: list[bytes] = []
    for raw in top_level_fields(body):
        num, child = _split_field(raw)
        if num == _CHILD_FIELD and child is not None:
            children.append(child)
        else:
            context.append(raw)
    return context, children


def count_items(resource_x: bytes) -> int:
    """Items (spans, log records, metrics) in one encoded ResourceX body; WireError if unframed."""
    return sum(len(_children(scope_x)[1]) for scope_x in _children(resource_x)[1])


def _decodes(decode: Callable[[bytes], M], payload: bytes) -> tuple[M | None, str]:
    try:
        return decode(payload), ""
    except (DecodeError, WireError) as exc:
        return None, f"malformed OTLP: {exc}"


def isolate(payload: bytes, decode: Callable[[bytes], M]) -> Isolated[M]:
    """Decode ``payload`` (an Export request) whole, or else part by part as the module says.

    ``decode`` parses one Export request (``ExportTraceServiceRequest.FromString`` and the
    like) and raises ``DecodeError`` on bad input. Bytes that are not even framed as a protobuf
    come back as one bad part, the whole payload, with 0 items.
    """
    whole, reason = _decodes(decode, payload)
    out: Isolated[M] = Isolated()
    if whole is not None:
        out.good.append((0, whole))
        out.whole = True
        return out
    try:
        resources = top_level_fields(payload)
    except WireError:
        out.bad.append(BadPart(payload, reason, 0))
        return out
    position = 0
    for raw in resources:
        position = _isolate_resource(raw, decode, position, out)
    return out


def _isolate_resource(raw: bytes, decode: Callable[[bytes], M], position: int, out: Isolated[M]) -> int:
    """Add one ResourceX's good and bad parts to ``out``; return the position after its items."""
    msg, _ = _decodes(decode, raw)
    num, body = _split_field(raw)
    try:
        items = count_items(body) if body is not None else 0
        if msg is not None:
            out.good.append((position, msg))
            return position + items
        if body is None or num != 1:
            raise WireError(f"field {num} is not a ResourceX")
        r_context, scopes = _children(body)
        context_msg, context_reason = _decodes(decode, _len_field(1, b"".join(r_context)))
    except WireError as exc:
        out.bad.append(BadPart(raw, f"malformed OTLP: {exc}", 0))
        return position
    if context_msg is None:  # the resource itself: every item of it goes with it
        out.bad.append(BadPart(raw, context_reason, items))
        return position + items
    for scope_x in scopes:
        s_context, entries = _children(scope_x)
        scope_msg, scope_reason = _decodes(decode, _request(r_context, s_context, ()))
        if scope_msg is None:  # the scope itself: its items go with it
            out.bad.append(BadPart(_request(r_context, s_context, entries), scope_reason, len(entries)))
            position += len(entries)
            continue
        for entry in entries:
            one = _request(r_context, s_context, (entry,))
            item_msg, item_reason = _decodes(decode, one)
            if item_msg is None:
                out.bad.append(BadPart(one, item_reason, 1))
            else:
                out.good.append((position, item_msg))
            position += 1
    return position


def _walk_items(payload: bytes) -> Iterator[bytes]:
    """Each item of ``payload`` as an Export request of its own (with its resource and scope)."""
    for raw in top_level_fields(payload):
        num, body = _split_field(raw)
        if num != 1 or body is None:
            continue
        r_context, scopes = _children(body)
        for scope_x in scopes:
            s_context, entries = _children(scope_x)
            for entry in entries:
                yield _request(r_context, s_context, (entry,))


def item_requests(payload: bytes) -> list[bytes]:
    """Every item of ``payload`` (wire order) as an Export request of its own, with its resource
    and scope; ``[payload]`` if the walk fails (bytes not framed as the module says)."""
    try:
        return list(_walk_items(payload))
    except WireError:
        return [payload]


def item_request(payload: bytes, position: int) -> bytes:
    """The Export request holding only the item at ``position`` (wire order) of ``payload``,
    with its resource and scope; the whole payload if the walk cannot find it."""
    try:
        return next(islice(_walk_items(payload), position, None), payload)
    except WireError:
        return payload
