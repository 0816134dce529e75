"""Bounded gzip inflation: a 10 KiB bomb must cost at most ``limit`` bytes of memory, not 10 GiB.

``zlib.decompressobj(...).decompress(data, max_length)`` inflates at most ``max_length`` bytes
per call and keeps the rest of the input in ``unconsumed_tail``, so the loop below can stop the
moment the output would pass the limit. Concatenated gzip members (RFC 1952 allows them, and
some clients write them) are inflated one after the other.
"""

from __future__ import annotations

import zlib

_CHUNK = 256 * 1024


class TooLarge(ValueError):
    """The inflated body would exceed the configured limit."""


class BadGzip(ValueError):
    """The body is not valid gzip."""


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data``; raise TooLarge as soon as the output passes ``limit`` bytes."""
    if not data:
        return b""  # an empty body is an empty Export request, whatever its declared encoding
    out = bytearray()
    pending = data
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            while pending:
                room = limit + 1 - len(out)
                out += d.decompress(pending, min(_CHUNK, room))
                if len(out) > limit:
                    raise TooLarge(f"decompressed body exceeds {limit} bytes")
                pending = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                raise BadGzip("truncated gzip stream")
        except zlib.error as exc:
            raise BadGzip(f"invalid gzip: {exc}") from None
        pending = d.unused_data
        if not pending:
            return bytes(out)
