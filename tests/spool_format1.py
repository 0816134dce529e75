"""The disk spool's format 1 (before CRC-32C), written out by hand from the layout that version
used, not with ``bus/spool/log.py``: tests prove a spool that version left is still replayed."""

from __future__ import annotations

import struct
import zlib

from bus.contract import Batch
from otlp.signals import Signal

MAGIC = 0x50535447  # bytes "GTSP"
_CODES = {Signal.TRACES: 1, Signal.LOGS: 2, Signal.METRICS: 3}


def frame(seq: int, batch: Batch, appended_ms: int = 1000) -> bytes:
    """A record as format 1 framed it, the same way: ``magic | length | zlib crc32(body) | body``."""
    tenant, headers = batch.tenant.encode(), ",".join(batch.correlation_ids).encode()
    body = b"".join((struct.pack("<QQBIHI", seq, appended_ms, _CODES[batch.signal], batch.items, len(tenant),
                                 len(headers)), tenant, headers, batch.payload))
    return struct.pack("<III", MAGIC, len(body), zlib.crc32(body)) + body


def ledger(acked: int) -> bytes:
    """Format 1's ledger: ``acked u64 | zlib crc32 of those 8 bytes``."""
    head = struct.pack("<Q", acked)
    return head + struct.pack("<I", zlib.crc32(head))
