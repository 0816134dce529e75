"""Bounded gzip inflation (RFC 1952): linear in the input, capped in output, members and ratio.

``zlib.decompressobj(...).decompress(data, max_length)`` inflates at most ``max_length`` bytes
per call and keeps the rest of the input in ``unconsumed_tail``, so the loop below can stop the
moment the output would pass the limit. Concatenated gzip members (RFC 1952 allows them, and
some clients write them) are inflated one after the other.

Why the input is fed in windows of ``_WINDOW`` bytes: when a member ends, zlib copies all input
after it into ``unused_data``. Feeding the whole body made that copy O(body) per member, so an
8 MiB body of ~419,000 empty members cost O(n^2), about 50 s of CPU. With windows the copy is
at most one window per member, and members are capped at ``MAX_MEMBERS`` besides.

Limits, each refused as soon as it is known:

- ``limit``: inflated bytes (``TooLarge``, answered 413 / RESOURCE_EXHAUSTED);
- ``max_ratio``: inflated bytes per compressed byte, checked only once the output passes
  ``ratio_floor`` (1 MiB) so small bodies are never refused for it (``TooLarge``): a 32 KiB
  body of zeros stops after a few MiB of output instead of at the 32 MiB cap;
- ``max_members``: members in one body (``TooManyMembers``, a ``BadGzip``: answered 400 /
  INVALID_ARGUMENT, since no OTLP client writes more than one or two and splitting the request
  would not help).

After the last member, zero bytes are ignored as gzip(1) and Python's ``gzip`` module do
(tape and block-device padding); any other trailing byte is ``BadGzip``.
"""

from __future__ import annotations

import asyncio
import zlib

_CHUNK = 256 * 1024  # output bytes per zlib call
_WINDOW = 64 * 1024  # input bytes per zlib call; bounds the per-member unused_data copy
GZIP_MAGIC = b"\x1f\x8b"
MAX_MEMBERS = 1024
RATIO_FLOOR = 1024 * 1024
# Bodies past either size are inflated in a worker thread (zlib releases the GIL), so one
# request never holds the event loop for more than ~1 ms of inflation (about 1 MiB of output).
INLINE_MAX_INPUT = 256 * 1024
INLINE_MAX_OUTPUT = 1024 * 1024


class TooLarge(ValueError):
    """The inflated body would exceed the configured limit or inflation ratio."""


class BadGzip(ValueError):
    """The body is not valid gzip."""


class TooManyMembers(BadGzip):
    """The body has more gzip members than ``max_members``."""


class Inflater:
    """Incremental inflation of one gzip body, resumable so a caller can bound each slice.

    ``run(budget)`` inflates until done or until about ``budget`` more bytes were produced,
    returning True when done; ``result()`` then gives the inflated bytes. The object holds no
    lock: one thread at a time (the receivers hand it from the event loop to one worker thread).
    """

    def __init__(self, data: bytes, limit: int, *, max_ratio: float = 0.0, ratio_floor: int = RATIO_FLOOR,
                 max_members: int = MAX_MEMBERS) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._out = bytearray()
        self._members = 0
        self._d: zlib._Decompress | None = None
        self._tail = b""  # input zlib held back because the output chunk was full
        self._limit = limit
        if max_ratio > 0:
            # The ratio cap, as a byte count; never below the floor and never above ``limit``.
            self._limit = min(limit, max(ratio_floor, int(len(data) * max_ratio)))
        self._ratio_refused = self._limit < limit
        self._max_members = max_members
        self._done = not data  # an empty body is an empty Export request, whatever its encoding

    def run(self, budget: int | None = None) -> bool:
        """Inflate up to about ``budget`` more output bytes (all if None); True when finished.

        Raises TooLarge, BadGzip (TooManyMembers) as described in the module docstring.
        """
        stop_at = None if budget is None else len(self._out) + budget
        try:
            while not self._done:
                if stop_at is not None and len(self._out) >= stop_at:
                    return False
                self._step()
        except zlib.error as exc:
            raise BadGzip(f"invalid gzip: {exc}") from None
        return True

    def result(self) -> bytes:
        assert self._done, "result() before run() finished"
        return bytes(self._out)

    def _step(self) -> None:
        if self._d is None:
            self._members += 1
            if self._members > self._max_members:
                raise TooManyMembers(f"more than {self._max_members} gzip members")
            self._d = zlib.decompressobj(wbits=31)
        d = self._d
        if self._tail:
            window: bytes | memoryview = self._tail
        else:
            window = self._data[self._pos:self._pos + _WINDOW]
            self._pos += len(window)
        asked = min(_CHUNK, self._limit + 1 - len(self._out))
        chunk = d.decompress(window, asked)
        self._out += chunk
        if len(self._out) > self._limit:
            if self._ratio_refused:
                raise TooLarge(f"decompressed body exceeds {self._limit} bytes (over the inflation ratio "
                               f"limit for a {len(self._data)} byte body)")
            raise TooLarge(f"decompressed body exceeds {self._limit} bytes")
        self._tail = d.unconsumed_tail
        if d.eof:
            # Input after the member's end went to unused_data: give it back to the window.
            self._pos -= len(d.unused_data)
            self._d = None
            self._tail = b""
            self._finish_if_only_padding()
        elif not self._tail and self._pos >= len(self._data) and len(chunk) < asked:
            # All input consumed, output not cut short by ``asked``: zlib wants more input.
            raise BadGzip("truncated gzip stream")

    def _finish_if_only_padding(self) -> None:
        rest = self._data[self._pos:]
        if not rest:
            self._done = True
        elif rest[0] == 0:
            if bytes(rest).strip(b"\0"):
                raise BadGzip("trailing garbage after the last gzip member")
            self._done = True


def gunzip(data: bytes, limit: int, *, max_ratio: float = 0.0, ratio_floor: int = RATIO_FLOOR,
           max_members: int = MAX_MEMBERS) -> bytes:
    """Inflate gzip ``data`` at once; raise TooLarge as soon as the output passes a limit.

    See ``Inflater`` and the module docstring for the limits and errors.
    """
    inf = Inflater(data, limit, max_ratio=max_ratio, ratio_floor=ratio_floor, max_members=max_members)
    inf.run()
    return inf.result()


async def gunzip_async(data: bytes, limit: int, *, max_ratio: float = 0.0,
                       max_members: int = MAX_MEMBERS) -> bytes:
    """``gunzip`` that keeps the event loop free: small bodies inline, the rest in a thread.

    A body over ``INLINE_MAX_INPUT`` compressed goes to a thread at once; a smaller one is
    inflated inline up to ``INLINE_MAX_OUTPUT`` and, if not finished, continued in a thread.
    Same errors as ``gunzip``.
    """
    inf = Inflater(data, limit, max_ratio=max_ratio, max_members=max_members)
    if len(data) > INLINE_MAX_INPUT or not inf.run(INLINE_MAX_OUTPUT):
        await asyncio.to_thread(inf.run)
    return inf.result()
