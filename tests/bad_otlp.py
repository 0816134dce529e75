"""OTLP bytes that are framed right but do not decode: what the edge will refuse, fed to sinks
directly to show they isolate such parts."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

MARKER = "BAD-UTF8-MARKER"


def with_invalid_utf8(request: Message, set_marker: Callable[[str], None]) -> bytes:
    """``request`` serialized after ``set_marker(MARKER)``, with the marker's first byte 0xff.

    proto3 strings must be UTF-8, so the protobuf runtime (Python's and Go's) refuses the
    message; the framing is untouched (same length).
    """
    set_marker(MARKER)
    raw = request.SerializeToString()
    assert raw.count(MARKER.encode()) == 1
    return raw.replace(MARKER.encode(), b"\xff" + MARKER.encode()[1:])


def with_malformed_varint(request: Message, set_marker: Callable[[str], None]) -> bytes:
    """``request`` serialized after ``set_marker(MARKER)``, with that string field (tag, length,
    text) overwritten by a varint field of the same size that runs past 10 bytes.

    Framing around it is intact; every protobuf decoder (Python's, Go's, Jaeger's pdata) refuses
    such a varint, where some replace invalid UTF-8 instead.
    """
    set_marker(MARKER)
    raw = request.SerializeToString()
    at = raw.index(MARKER.encode())
    tag = raw[at - 2]
    assert raw.count(MARKER.encode()) == 1 and tag < 0x80 and raw[at - 1] == len(MARKER)
    varint = b"\xff" * len(MARKER) + b"\x01"  # len + 1 > 10 bytes
    return raw[:at - 2] + bytes([tag & ~7]) + varint + raw[at + len(MARKER):]
