"""Content check of one ResourceX: what every sink's decoder takes, and nothing else.

``wire.prepare`` walks only the framing of a request; a ResourceX that is framed well can still
hold what a store's decoder refuses or reads differently:

- a string field that is not UTF-8 (proto3 requires it; upb and Go refuse it);
- a varint over ten bytes, or a ten-byte one over 2**64 (Go refuses it, upb keeps 64 bits);
- a known field sent with another wire type (Go's pdata, in the Collector and Jaeger, refuses
  it; upb files it as an unknown field and the value is silently lost);
- an int32, uint32, sint32 or enum outside its range (parsers keep the low 32 bits: the stores
  would hold a value the client never sent);
- a packed field whose length does not fit its elements, a group, field number 0;
- messages nested so deep that a recursive converter or JSON encoder gives up.

``otlp/_otlpcheck.c`` checks all of these in one pass over the bytes without allocating,
driven by tables made here from the opentelemetry-proto descriptors (so a newer OTLP version
is picked up by upgrading the package). Field numbers the descriptors do not know are unknown
fields and pass, as protobuf requires, so data from a newer OTLP version is not refused.

Nesting: an AnyValue may hold arrays and kvlists inside one another at most
``MAX_NESTED_VALUES`` deep (an array in an array is 2). OTLP's messages nest only through them,
so this bounds the whole depth too: at most 7 + 3 * 16 = 55 messages below a ResourceX, which
every converter, JSON encoder (orjson allows 255) and Elasticsearch mapping takes.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as FD

from otlp import _otlpcheck
from otlp.signals import Signal

__all__ = ["MAX_NESTED_VALUES", "TOO_MANY", "check_and_count", "check_export_fields", "check_resource"]

MAX_NESTED_VALUES = 16
"""AnyValue arrays/kvlists inside one another, at most (a value holding an array is 1)."""
_NESTING = frozenset(("opentelemetry.proto.common.v1.ArrayValue",
                      "opentelemetry.proto.common.v1.KeyValueList"))

# Kinds as _otlpcheck.c numbers them.
_K_MSG, _K_STRING, _K_BYTES, _K_ID = 1, 2, 3, 13
# Id fields and their one length (or empty), as pdata's TraceID/SpanID unmarshal requires.
_ID_BYTES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_REPEATED = 0x100
_ITEM = 0x200
# The fields whose every occurrence is one item (span, log record, data point), counted in C.
_ITEM_FIELDS = frozenset((
    "opentelemetry.proto.trace.v1.ScopeSpans.spans", "opentelemetry.proto.logs.v1.ScopeLogs.log_records",
    *(f"opentelemetry.proto.metrics.v1.{kind}.data_points"
      for kind in ("Gauge", "Sum", "Histogram", "ExponentialHistogram", "Summary")),
))
TOO_MANY = "more items than allowed"
"""The reason ``check_and_count`` gives when counting passed its limit (compare with ``is``)."""
_KINDS = {
    FD.TYPE_STRING: _K_STRING, FD.TYPE_BYTES: _K_BYTES, FD.TYPE_INT64: 4, FD.TYPE_INT32: 5,
    FD.TYPE_ENUM: 5, FD.TYPE_UINT32: 6, FD.TYPE_SINT32: 7, FD.TYPE_SINT64: 8, FD.TYPE_BOOL: 9,
    FD.TYPE_FIXED64: 10, FD.TYPE_SFIXED64: 10, FD.TYPE_DOUBLE: 10,
    FD.TYPE_FIXED32: 11, FD.TYPE_SFIXED32: 11, FD.TYPE_FLOAT: 11, FD.TYPE_UINT64: 12,
}
_WHY = {
    1: "truncated",
    2: "varint longer than 10 bytes",
    3: "varint over 64 bits",
    4: "wrong wire type for its declared type",
    5: "groups are not used by OTLP",
    6: "field number 0 or too large",
    7: "not valid UTF-8",
    8: f"AnyValue arrays/kvlists nested more than {MAX_NESTED_VALUES} deep",
    9: "value out of range for its type",
    10: "packed field length does not fit its elements",
    12: "an id of the wrong length (trace ids are 16 bytes, span ids 8, or empty)",
}


def _tables() -> tuple[bytes, dict[Signal, int], dict[Signal, int], list[Any]]:
    """The flat int32 table _otlpcheck.setup takes, the indexes of each signal's ResourceX and
    Export request, and the descriptors by index (to name a field in an error)."""
    index: dict[str, int] = {}
    order: list[Any] = []

    def visit(desc: Any) -> int:
        found = index.get(desc.full_name)
        if found is not None:
            return found
        index[desc.full_name] = len(order)
        order.append(desc)
        for f in desc.fields:
            if f.type == FD.TYPE_MESSAGE:
                visit(f.message_type)
        return index[desc.full_name]

    roots = {s: visit(s.spec.resource.DESCRIPTOR) for s in Signal}
    requests = {s: visit(s.spec.request.DESCRIPTOR) for s in Signal}
    ints = [len(order)]
    for desc in order:
        top = max((f.number for f in desc.fields), default=0)
        kinds = [0] * (top + 1)
        subs = [0] * (top + 1)
        for f in desc.fields:
            if f.type == FD.TYPE_MESSAGE:
                kinds[f.number] = _K_MSG | (_ITEM if f.full_name in _ITEM_FIELDS else 0)
                subs[f.number] = index[f.message_type.full_name]
            else:
                if f.type == FD.TYPE_BYTES and f.name in _ID_BYTES and not f.is_repeated:
                    kinds[f.number] = _K_ID
                    subs[f.number] = _ID_BYTES[f.name]
                    continue
                kinds[f.number] = _KINDS[f.type] | (_REPEATED if f.is_repeated else 0)
        ints += [top, int(desc.full_name in _NESTING), *kinds, *subs]
    return struct.pack(f"<{len(ints)}i", *ints), roots, requests, order


_TABLE, _ROOTS, _REQUESTS, _DESCRIPTORS = _tables()
_otlpcheck.setup(_TABLE)


def check_resource(signal: Signal, body: bytes | memoryview) -> str | None:
    """None if every sink decodes this ResourceX body (without its tag and length) as sent,
    else why not, naming the message and field. Raises nothing."""
    return check_and_count(signal, body, 1 << 62)[1]


def check_and_count(signal: Signal, body: bytes | memoryview, max_items: int) -> tuple[int, str | None]:
    """(items, None) if every sink decodes this ResourceX body as sent, with its spans / log
    records / data points counted; else (0, why not), ``TOO_MANY`` itself once counting passes
    ``max_items`` (the walk stops there). Raises nothing."""
    found = _otlpcheck.check(body, _ROOTS[signal], MAX_NESTED_VALUES, max_items)
    if isinstance(found, int):
        return found, None
    if found[0] == _E_TOO_MANY:
        return 0, TOO_MANY
    return 0, _explain(found, "resource")


def check_export_fields(signal: Signal, fields: bytes | memoryview) -> str | None:
    """None if these top-level fields of an Export request, other than its ResourceX, are what
    every decoder reads alike (unknown fields from a newer OTLP, kept as they are), else why not."""
    found = _otlpcheck.check(fields, _REQUESTS[signal], MAX_NESTED_VALUES, 1 << 62)
    return None if isinstance(found, int) else _explain(found, "request")


_E_TOO_MANY = 11


def _explain(fault: tuple[int, int, int, int], what: str) -> str:
    code, msg, field, offset = fault
    desc = _DESCRIPTORS[msg]
    known = desc.fields_by_number.get(field)
    where = f"{desc.name}.{known.name}" if known is not None else f"{desc.name} field {field}"
    return f"{where}: {_WHY.get(code, 'invalid')} (byte {offset} of the {what})"
