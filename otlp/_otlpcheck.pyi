"""Types of the C module ``otlp/_otlpcheck.c`` (see its header comment and otlp/validate.py)."""

def setup(table: bytes, /) -> None: ...
def check(buffer: bytes | memoryview, message_index: int, max_nesting: int, max_items: int,
          /) -> int | tuple[int, int, int, int]: ...
def span_buckets(payload: bytes | memoryview, partitions: int, /) -> dict[int, bytes] | None:
    """``wire.group_spans(payload, lambda t: zlib.crc32(t) % partitions)`` byte for byte, or None
    where that raises WireError (and for ``partitions`` outside 1..65536)."""
def metric_buckets(payload: bytes | memoryview, partitions: int, /) -> dict[int, bytes] | None:
    """``wire.group_resources(payload, partitioning.METRIC_IDENTITY_KEYS, lambda a:
    partitioning.metric_bucket(a, partitions))`` byte for byte (the payload object itself when it
    all goes to one bucket), or None where that raises WireError (and for ``partitions`` outside
    1..65536)."""
