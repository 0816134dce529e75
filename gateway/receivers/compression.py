"""Request body decoders, one row per ``Content-Encoding``, each bounded in output and time.

As the Collector's ``config/confighttp/compression.go`` (its ``availableDecoders`` map), the
table ``DECODERS`` maps a ``Content-Encoding`` name to a decoder; OTLP/HTTP looks the header up
in it (a name not in it is 415) and OTLP/gRPC recognises gzip and deflate messages by their
first bytes (``for_grpc_message``). Every decoder takes the body and ``Limits`` and produces at
most ``Limits.cap(len(body))`` bytes, stopping as soon as the output would pass it:

- ``limit``: inflated bytes (``TooLarge``, answered 413 / RESOURCE_EXHAUSTED);
- ``max_ratio``: inflated bytes per compressed byte, checked only once the output passes
  ``ratio_floor`` (1 MiB) so small bodies are never refused for it (``TooLarge``): a 32 KiB
  body of zeros stops after a few MiB of output instead of at the 32 MiB cap;
- ``max_members``: gzip members or zstd frames in one body (``TooManyMembers``, a
  ``BadEncoding``: answered 400 / INVALID_ARGUMENT, since no OTLP client writes more than one
  or two and splitting the request would not help).

So memory is bounded by the cap (plus zstd's window, at most ``ZSTD_MAX_WINDOW``) whatever the
body claims, and time is linear in the input and in the output allowed.

The rows:

- ``gzip`` (RFC 1952) and ``zstd`` (RFC 8878, via ``compression.zstd`` or its backport): one or
  more members / frames, inflated incrementally with the library's ``max_length``. After the
  last gzip member, zero bytes are ignored as gzip(1) and Python's ``gzip`` module do (tape and
  block-device padding); any other trailing byte is ``BadEncoding``. A zstd frame that needs a
  window over ``ZSTD_MAX_WINDOW`` (8 MiB, what the zstd format asks every decoder to support)
  is ``BadEncoding``.
- ``deflate`` and ``zlib``: HTTP's deflate is the zlib format (RFC 1950), as the Collector reads
  both names; a raw deflate stream (RFC 1951, what some clients send for ``deflate``) is accepted
  too, told apart by the zlib header, which no raw stream an encoder writes can start with. The
  Collector accepts only the zlib format (raw deflate is its 400).
- ``snappy``: the block format or, when the body starts with the framing format's stream
  identifier, the framing format, as the Collector's ``snappy`` decoder (it accepted framed
  bodies under this name before ``x-snappy-framed`` existed); ``x-snappy-framed`` is the framing
  format only. The block format states its uncompressed length first: over the cap it is
  refused before anything is decoded. A framed body is first walked chunk by chunk, adding up
  each chunk's stated length (at most ``SNAPPY_MAX_CHUNKS`` chunks), and decoded (checksums
  verified) only when the total is within the cap. Decoding is ``cramjam``'s.

Why gzip and zstd input is fed in windows of ``_WINDOW`` bytes: when a member ends, zlib copies
all input after it into ``unused_data``. Feeding the whole body made that copy O(body) per
member, so an 8 MiB body of ~419,000 empty members cost O(n^2), about 50 s of CPU. With windows
the copy is at most one window per member, and members are capped besides.

Bodies over ``INLINE_MAX_INPUT`` compressed or ``INLINE_MAX_OUTPUT`` inflated are decoded in a
worker thread (``decode_async``), so one request never holds the event loop for more than about
1 ms of decoding.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cramjam

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

_CHUNK = 256 * 1024  # output bytes per library call
_WINDOW = 64 * 1024  # input bytes per library call; bounds the per-member unused_data copy
GZIP_MAGIC = b"\x1f\x8b"
MAX_MEMBERS = 1024
RATIO_FLOOR = 1024 * 1024
ZSTD_MAX_WINDOW_LOG = 23
ZSTD_MAX_WINDOW = 1 << ZSTD_MAX_WINDOW_LOG
SNAPPY_MAX_CHUNKS = 16384  # a 64 KiB chunk each is 1 GiB; encoders write 64 KiB chunks
SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
_SNAPPY_MAX_CHUNK_DATA = 65536  # uncompressed bytes in one framed chunk (framing_format.txt)
_SNAPPY_INLINE_WALK = 16 * 1024  # framed bodies past this are walked in the worker thread
# Bodies past either size are decoded in a worker thread (zlib, zstd and cramjam release the
# GIL), so one request never holds the event loop for more than ~1 ms (about 1 MiB of output).
INLINE_MAX_INPUT = 256 * 1024
INLINE_MAX_OUTPUT = 1024 * 1024


class TooLarge(ValueError):
    """The decoded body would exceed the configured limit or inflation ratio."""


class BadEncoding(ValueError):
    """The body is not valid in its content encoding."""


BadGzip = BadEncoding  # the name gzip's callers used


class TooManyMembers(BadEncoding):
    """The body has more gzip members or zstd frames than ``max_members``."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one body may decode to: ``max_bytes``, and ``max_ratio`` times its size past
    ``ratio_floor`` (0: no ratio cap); gzip members and zstd frames at most ``max_members``."""

    max_bytes: int
    max_ratio: float = 0.0
    ratio_floor: int = RATIO_FLOOR
    max_members: int = MAX_MEMBERS

    def cap(self, compressed: int) -> int:
        """The most bytes a body of ``compressed`` bytes may decode to."""
        if self.max_ratio <= 0:
            return self.max_bytes
        return min(self.max_bytes, max(self.ratio_floor, int(compressed * self.max_ratio)))

    def too_large(self, compressed: int, what: str = "decompressed body") -> TooLarge:
        cap = self.cap(compressed)
        if cap < self.max_bytes:
            return TooLarge(f"{what} exceeds {cap} bytes (over the inflation ratio limit for a "
                            f"{compressed} byte body)")
        return TooLarge(f"{what} exceeds {cap} bytes")


class Decoding(Protocol):
    """One body being decoded, resumable so a caller can bound each slice of work.

    ``run(budget)`` decodes until done or until about ``budget`` more bytes were produced (a
    decoder that cannot stop part way returns False at once when its output would pass the
    budget), returning True when done; ``result()`` then gives the decoded bytes. No lock: one
    thread at a time (the receivers hand it from the event loop to one worker thread).
    """

    def run(self, budget: int | None = None) -> bool: ...

    def result(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Decoder:
    """A row of the table: a ``Content-Encoding`` name and how to start decoding a body."""

    name: str
    start: Callable[[bytes, Limits], Decoding]


class _Stream(Protocol):
    """What ``_Streams`` needs of one member/frame decompressor (zstd's API; zlib adapted)."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes: ...


class _Zlib:
    """A zlib decompressobj with ``needs_input``: zlib hands back input it did not consume
    (``unconsumed_tail``) where zstd keeps it; this keeps it too."""

    __slots__ = ("_d", "_tail", "needs_input")

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits=wbits)
        self._tail = b""
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        chunk = self._d.decompress(self._tail or data, max_length)
        self._tail = self._d.unconsumed_tail
        # Output cut short by max_length may leave more to come without more input.
        self.needs_input = not self._tail and len(chunk) < max_length
        return chunk


def _zstd_frame() -> _Stream:
    return zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: ZSTD_MAX_WINDOW_LOG})


class _Streams:
    """Concatenated compressed streams (gzip members, zstd frames) or one (deflate)."""

    def __init__(self, data: bytes, limits: Limits, new_stream: Callable[[], _Stream], what: str, *,
                 max_members: int, unit: str = "members", single: bool = False,
                 zero_padding: bool = False, library_error: type[Exception]) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._out = bytearray()
        self._members = 0
        self._d: _Stream | None = None
        self._limits = limits
        self._cap = limits.cap(len(data))
        self._new = new_stream
        self._what = what
        self._max_members = max_members
        self._unit = unit
        self._single = single
        self._zero_padding = zero_padding
        self._library_error = library_error
        self._done = not data  # an empty body is an empty Export request, whatever its encoding

    def run(self, budget: int | None = None) -> bool:
        stop_at = None if budget is None else len(self._out) + budget
        try:
            while not self._done:
                if stop_at is not None and len(self._out) >= stop_at:
                    return False
                self._step()
        except self._library_error as exc:
            raise BadEncoding(f"invalid {self._what}: {exc}") from None
        return True

    def result(self) -> bytes:
        assert self._done, "result() before run() finished"
        return bytes(self._out)

    def _step(self) -> None:
        if self._d is None:
            self._members += 1
            if self._members > self._max_members:
                raise TooManyMembers(f"more than {self._max_members} {self._what} {self._unit}")
            self._d = self._new()
        d = self._d
        window: bytes | memoryview = b""
        if d.needs_input:
            window = self._data[self._pos:self._pos + _WINDOW]
            if not window:
                raise BadEncoding(f"truncated {self._what} stream")
            self._pos += len(window)
        asked = min(_CHUNK, self._cap + 1 - len(self._out))
        self._out += d.decompress(window, asked)
        if len(self._out) > self._cap:
            raise self._limits.too_large(len(self._data))
        if d.eof:
            # Input after the member's end went to unused_data: give it back to the window.
            self._pos -= len(d.unused_data)
            self._d = None
            self._after_member()

    def _after_member(self) -> None:
        rest = self._data[self._pos:]
        if not rest:
            self._done = True
        elif self._single:
            raise BadEncoding(f"trailing bytes after the {self._what} stream")
        elif self._zero_padding and rest[0] == 0:
            if bytes(rest).strip(b"\0"):
                raise BadEncoding(f"trailing garbage after the last {self._what} member")
            self._done = True


def _gzip(data: bytes, limits: Limits) -> Decoding:
    return _Streams(data, limits, lambda: _Zlib(31), "gzip", max_members=limits.max_members,
                    zero_padding=True, library_error=zlib.error)


def is_zlib_header(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts with an RFC 1950 header: method 8 (deflate), window at most 32 KiB,
    check bits right, no preset dictionary. Raw deflate starts with one only if its first block
    is a stored block with non-zero padding bits, which encoders do not write."""
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0 and not flg & 0x20


def _deflate(data: bytes, limits: Limits) -> Decoding:
    wbits = 15 if is_zlib_header(data) else -15
    return _Streams(data, limits, lambda: _Zlib(wbits), "deflate", max_members=1, single=True,
                    library_error=zlib.error)


def _zstd(data: bytes, limits: Limits) -> Decoding:
    return _Streams(data, limits, _zstd_frame, "zstd", max_members=limits.max_members, unit="frames",
                    library_error=zstd.ZstdError)


def _uvarint32(data: bytes | memoryview, pos: int = 0) -> int:
    """The snappy block format's stated length: a little-endian base-128 varint below 2^32."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            break
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >> 32:
                break
            return value
    raise BadEncoding("invalid snappy: bad length header")


class _Snappy:
    """Snappy, block or framed: nothing is decoded before its stated length is known and within
    the cap. The library decodes in one call, so ``run(budget)`` declines work it cannot bound
    by the budget: output over it, or walking the chunks of a framed body over 16 KiB."""

    def __init__(self, data: bytes, limits: Limits, *, framed_only: bool) -> None:
        self._data = data
        self._limits = limits
        self._cap = limits.cap(len(data))
        self._out: bytes | None = b"" if not data else None
        self._framed = data.startswith(SNAPPY_STREAM_ID)
        self._framed_only = framed_only
        self._size: int | None = None

    def _framed_size(self) -> int:
        """The total the chunks say they hold; raises TooLarge past the cap, BadEncoding for
        chunks the format does not allow (the checksums are the library's to verify)."""
        data = memoryview(self._data)
        pos = total = chunks = 0
        while pos < len(data):
            chunks += 1
            if chunks > SNAPPY_MAX_CHUNKS:
                raise TooManyMembers(f"more than {SNAPPY_MAX_CHUNKS} snappy chunks")
            if pos + 4 > len(data):
                raise BadEncoding("truncated snappy framing: chunk header")
            kind = data[pos]
            length = data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16
            body = pos + 4
            pos = body + length
            if pos > len(data):
                raise BadEncoding("truncated snappy framing: chunk body")
            if kind == 0x00:  # compressed: 4 bytes of checksum, then a block
                if length < 5:
                    raise BadEncoding("invalid snappy framing: short compressed chunk")
                size = _uvarint32(data, body + 4)
            elif kind == 0x01:  # uncompressed: 4 bytes of checksum, then the data
                if length < 4:
                    raise BadEncoding("invalid snappy framing: short uncompressed chunk")
                size = length - 4
            elif kind == 0xFF:
                if data[body:pos] != SNAPPY_STREAM_ID[4:]:
                    raise BadEncoding("invalid snappy framing: bad stream identifier")
                continue
            elif kind < 0x80:
                raise BadEncoding(f"invalid snappy framing: reserved chunk type {kind:#04x}")
            else:  # padding (0xfe) and reserved skippable chunks
                continue
            if size > _SNAPPY_MAX_CHUNK_DATA:
                raise BadEncoding(f"invalid snappy framing: a chunk of {size} bytes, over 65536")
            total += size
            if total > self._cap:
                raise self._limits.too_large(len(data))
        return total

    def run(self, budget: int | None = None) -> bool:
        if self._out is not None:
            return True
        if self._size is None:
            if self._framed_only and not self._framed:
                raise BadEncoding("invalid snappy framing: no stream identifier")
            if self._framed and budget is not None and len(self._data) > _SNAPPY_INLINE_WALK:
                return False
            self._size = self._framed_size() if self._framed else _uvarint32(self._data)
            if self._size > self._cap:
                raise self._limits.too_large(len(self._data))
        if budget is not None and self._size > budget:
            return False
        try:
            if self._framed:
                out = cramjam.snappy.decompress(self._data, output_len=self._size)
            else:
                out = cramjam.snappy.decompress_raw(self._data)
        except cramjam.DecompressionError as exc:
            raise BadEncoding(f"invalid snappy: {exc}") from None
        self._out = bytes(out)
        if len(self._out) > self._cap:  # cannot happen: each block is checked against its length
            raise self._limits.too_large(len(self._data))
        return True

    def result(self) -> bytes:
        assert self._out is not None, "result() before run() finished"
        return self._out


class _Identity:
    __slots__ = ("_data",)

    def __init__(self, data: bytes, _limits: Limits) -> None:
        self._data = data

    def run(self, budget: int | None = None) -> bool:
        return True

    def result(self) -> bytes:
        return self._data


IDENTITY = Decoder("identity", _Identity)
GZIP = Decoder("gzip", _gzip)
DEFLATE = Decoder("deflate", _deflate)
ZSTD = Decoder("zstd", _zstd)
SNAPPY = Decoder("snappy", lambda data, limits: _Snappy(data, limits, framed_only=False))
SNAPPY_FRAMED = Decoder("x-snappy-framed", lambda data, limits: _Snappy(data, limits, framed_only=True))

# Content-Encoding (lower case) -> decoder. "" is a request without the header.
DECODERS: dict[str, Decoder] = {
    "": IDENTITY, "identity": IDENTITY, "gzip": GZIP, "deflate": DEFLATE, "zlib": DEFLATE, "zstd": ZSTD,
    "snappy": SNAPPY, "x-snappy-framed": SNAPPY_FRAMED,
}
NAMES = ", ".join(sorted(name for name in DECODERS if name))


def for_grpc_message(message: bytes) -> Decoder | None:
    """The decoder of a gRPC message grpc left compressed, told by its first bytes: grpc's gzip
    and deflate (zlib format; the only names grpc lets through besides identity). None: as is.

    No Export request starts with gzip's 0x1f (field 3 with the invalid wire type 7); one that
    starts with a zlib header would begin with the undefined field 15 as a varint, so a body
    that looks like zlib but does not inflate is ingested as it is (see ``otlp_grpc``).
    """
    if message[:2] == GZIP_MAGIC:
        return GZIP
    if is_zlib_header(message):
        return DEFLATE
    return None


def decode(decoder: Decoder, data: bytes, limits: Limits) -> bytes:
    """Decode ``data`` at once; TooLarge or BadEncoding as described in the module docstring."""
    d = decoder.start(data, limits)
    d.run()
    return d.result()


async def decode_async(decoder: Decoder, data: bytes, limits: Limits) -> bytes:
    """``decode`` that keeps the event loop free: small bodies inline, the rest in a thread.

    A body over ``INLINE_MAX_INPUT`` goes to a thread at once; a smaller one is decoded inline up
    to ``INLINE_MAX_OUTPUT`` and, if not finished, continued in a thread. Same errors as
    ``decode``.
    """
    if decoder is IDENTITY:
        return data
    d = decoder.start(data, limits)
    if len(data) > INLINE_MAX_INPUT or not d.run(INLINE_MAX_OUTPUT):
        await asyncio.to_thread(d.run)
    return d.result()


def gunzip(data: bytes, limit: int, *, max_ratio: float = 0.0, ratio_floor: int = RATIO_FLOOR,
           max_members: int = MAX_MEMBERS) -> bytes:
    """``decode`` of a gzip body with these limits."""
    return decode(GZIP, data, Limits(limit, max_ratio, ratio_floor, max_members))
