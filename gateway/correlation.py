"""Correlation ids: one per request, carried in resources, Kafka headers and responses.

UUIDv7 because it sorts by time, so ids in logs and stores line up with arrival order, and
its text form is what every tool already accepts. A client may send its own id; we keep it
only if it is harmless to put into headers, labels and JSON.
"""

from __future__ import annotations

import os
import re
import time

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def accept(value: str | None) -> str | None:
    """``value`` if it is a usable correlation id (UUID text or a 1..64 char token of
    ``[A-Za-z0-9._-]``), else None so the caller mints a new one."""
    if not value:
        return None
    if _TOKEN.fullmatch(value):  # UUID text is such a token too
        return value
    return None
