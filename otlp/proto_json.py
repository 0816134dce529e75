"""Protobuf Export request bytes -> OTLP/JSON, in C where it can, else the Python reference.

``otlp/_otlpjson.c`` writes the JSON straight from the wire bytes (about 1 ms of CPU for a
512-span, 230 KB ``bench.payloads.traces_request()`` against 13 ms for
``json_mapping.proto_to_json``, and with the GIL released),
byte for byte what the reference gives. For a request it cannot be sure of without looking back
(a field or oneof set twice, a repeated field split by others, a wire type that does not match
its declaration, invalid UTF-8, bad framing: see the C file's header) it answers None, and
``proto_to_json`` here converts that one with the reference, which also raises the same
WireError for what does not convert. The file sink, the one user, calls ``fast_proto_to_json``
and counts each record it then hands to the reference
(``pipeline_file_sink_json_fallback_records_total``, ``pipelines/sinks/file.py``); this core
module keeps no metrics of its own.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as FD

from otlp import _otlpjson
from otlp.json_mapping import proto_to_json as reference_proto_to_json
from otlp.signals import Signal

__all__ = ["fast_proto_to_json", "proto_to_json"]

# Kinds and flags as _otlpjson.c numbers them.
_K_MSG, _K_BYTES, _K_ID = 1, 3, 4
_KINDS = {
    FD.TYPE_STRING: 2, FD.TYPE_BYTES: _K_BYTES, FD.TYPE_INT64: 5, FD.TYPE_UINT64: 6,
    FD.TYPE_SINT64: 7, FD.TYPE_INT32: 8, FD.TYPE_ENUM: 8, FD.TYPE_UINT32: 9, FD.TYPE_SINT32: 10,
    FD.TYPE_BOOL: 11, FD.TYPE_DOUBLE: 12, FD.TYPE_FLOAT: 13, FD.TYPE_FIXED64: 14,
    FD.TYPE_SFIXED64: 15, FD.TYPE_FIXED32: 16, FD.TYPE_SFIXED32: 17, FD.TYPE_MESSAGE: _K_MSG,
}
_REPEATED = 0x100
_IMPLICIT = 0x200
# Bytes fields written as hex, as json_mapping does (by field name, in every message).
_HEX_IDS = frozenset(("trace_id", "span_id", "parent_span_id"))
_KEY_VALUE = "opentelemetry.proto.common.v1.KeyValue"


def _kind(f: Any) -> int:
    kind = _K_ID if f.type == FD.TYPE_BYTES and f.name in _HEX_IDS else _KINDS[f.type]
    if f.is_repeated:
        kind |= _REPEATED
    elif not f.has_presence:
        kind |= _IMPLICIT
    return kind


def _tables() -> tuple[bytes, list[bytes], dict[Signal, int]]:
    """The flat int32 table and the names _otlpjson.setup takes, and each request's index."""
    index: dict[str, int] = {}
    order: list[Any] = []
    pending = [s.spec.request.DESCRIPTOR for s in Signal]
    while pending:  # every message type reachable from the three requests
        desc = pending.pop()
        if desc.full_name in index:
            continue
        index[desc.full_name] = len(order)
        order.append(desc)
        pending += [f.message_type for f in desc.fields if f.type == FD.TYPE_MESSAGE]
    names: list[bytes] = []
    ints = [len(order)]
    for desc in order:
        top = max((f.number for f in desc.fields), default=0)
        rows = [[0, 0, -1, 0] for _ in range(top + 1)]
        # Oneof groups with more than one member (proto3 `optional` makes one of its own).
        groups = [o for o in desc.oneofs if len(o.fields) > 1]
        for f in desc.fields:
            oneof = groups.index(f.containing_oneof) if f.containing_oneof in groups else -1
            sub = index[f.message_type.full_name] if f.type == FD.TYPE_MESSAGE else 0
            rows[f.number] = [_kind(f), sub, oneof, len(names)]
            names.append(b'"' + f.json_name.encode() + b'":')
        ints += [top, int(desc.full_name == _KEY_VALUE)]
        ints += [x for row in rows for x in row]
    requests = {s: index[s.spec.request.DESCRIPTOR.full_name] for s in Signal}
    return struct.pack(f"<{len(ints)}i", *ints), names, requests


_TABLE, _NAMES, _REQUESTS = _tables()
_otlpjson.setup(_TABLE, _NAMES)


def fast_proto_to_json(signal: Signal, payload: bytes | memoryview, end: bytes = b"") -> bytes | None:
    """The OTLP/JSON of a serialized Export request from the C writer, then ``end`` (b"\\n" for a
    JSON line, without copying the JSON again), or None where only the reference can say (see
    the module doc). Raises nothing for any content; releases the GIL."""
    return _otlpjson.to_json(payload, _REQUESTS[signal], end)


def proto_to_json(signal: Signal, payload: bytes | memoryview, end: bytes = b"") -> bytes:
    """Serialized Export request -> compact OTLP/JSON, exactly ``json_mapping.proto_to_json``'s
    bytes, in C when it can be, then ``end``. Raises WireError as the reference does."""
    out = _otlpjson.to_json(payload, _REQUESTS[signal], end)
    return out if out is not None else reference_proto_to_json(signal, bytes(payload)) + end
