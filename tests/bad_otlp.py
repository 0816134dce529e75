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
