"""Which Kafka partition each part of a batch goes to, so one tenant spreads over every partition.

A batch is one tenant's data (``bus.contract.Batch``). Keyed by tenant, all of it lands on one
partition and one pipeline worker does all of it. Spread instead, over bytes
(docs/architecture.md principle 1), keeping together only what a sink needs together:

- **traces** by trace id: ``crc32(trace_id) % partitions``, so every span of a trace, from any
  batch or gateway, is read by one worker (tail-sampling or trace-assembling consumers need
  that). The spans of a batch become at most one message per partition, not one per trace.
- **metrics** by the resource's Prometheus identity, ``job`` (``service.namespace/service.name``)
  and ``instance`` (``service.instance.id``), as ``pipelines/convert/remote_write.py`` derives
  them: ``crc32(job NUL instance) % partitions``, whole ResourceMetrics at a time. Finer keys
  (metric name, point attributes) would not keep series whole: every remote-write series carries
  only ``job``/``instance`` of its resource (two resources differing in another attribute feed
  one series), and each record writes the resource's ``target_info`` at the newest timestamp of
  its points, so two workers writing one resource's metrics would send ``target_info`` (and any
  shared series) out of order, which Prometheus refuses. A tenant with many service instances
  spreads; one instance's metrics stay on one partition.
- **logs** freely: the whole batch to the partition ``turn % partitions``, turns counted by the
  caller (round robin over batches).

Traces and metrics are split in C (``_otlpcheck.span_buckets``, byte for byte ``wire.group_spans``
with ``trace_bucket``; ``_otlpcheck.metric_buckets``, byte for byte ``wire.group_resources`` with
``metric_bucket``); the Python stays the reference and the fallback for a payload the C walk turns
down, and names its fault.

Buckets are indexes into the topic's partitions in ascending id order. The hash (zlib's CRC-32,
IEEE) is fixed: changing it, or the partition count, moves traces and series to other partitions,
so points in flight during that change may arrive out of order once.
"""

from __future__ import annotations

import zlib

from otlp import _otlpcheck, wire
from otlp.signals import Signal

__all__ = ["METRIC_IDENTITY_KEYS", "buckets", "metric_bucket", "trace_bucket"]

_SERVICE_NAME = b"service.name"
_SERVICE_NAMESPACE = b"service.namespace"
_SERVICE_INSTANCE = b"service.instance.id"
METRIC_IDENTITY_KEYS = frozenset((_SERVICE_NAME, _SERVICE_NAMESPACE, _SERVICE_INSTANCE))


def buckets(signal: Signal, payload: bytes, partitions: int, turn: int = 0) -> dict[int, bytes]:
    """bucket (0 <= bucket < ``partitions``) -> a valid Export request of ``signal`` with the parts
    of ``payload`` (a serialized Export request) that go there; empty buckets are left out.

    ``turn``: the caller's count of batches, for signals spread round robin (logs). Raises
    ``wire.WireError`` on a payload whose framing is broken (the edge has checked it before);
    ValueError when ``partitions`` < 1.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    if partitions == 1 or not payload:
        return {0: payload} if payload else {}
    if signal is Signal.TRACES:
        # C first (same bytes, ~14x less CPU); the Python walk is the reference and names the
        # fault of a payload the C walk turns down.
        fast = _otlpcheck.span_buckets(payload, partitions)
        if fast is not None:
            return fast
        return wire.group_spans(payload, lambda trace_id: trace_bucket(trace_id, partitions))
    if signal is Signal.METRICS:
        # C first (same bytes, whole resources as slices); the Python walk is the reference.
        fast = _otlpcheck.metric_buckets(payload, partitions)
        if fast is not None:
            return fast
        return wire.group_resources(payload, METRIC_IDENTITY_KEYS,
                                    lambda attrs: metric_bucket(attrs, partitions))
    return {turn % partitions: payload}


def trace_bucket(trace_id: bytes, partitions: int) -> int:
    """The bucket of a span by its raw 16-byte trace id (any bytes, also the empty id)."""
    return zlib.crc32(trace_id) % partitions


def metric_bucket(attributes: dict[bytes, bytes], partitions: int) -> int:
    """The bucket of a ResourceMetrics by its ``service.*`` attributes (key -> AnyValue body),
    from the ``job`` and ``instance`` labels remote write gives its series."""
    service = _label(attributes.get(_SERVICE_NAME, b""))
    namespace = _label(attributes.get(_SERVICE_NAMESPACE, b""))
    job = namespace + b"/" + service if namespace else service
    return zlib.crc32(job + b"\x00" + _label(attributes.get(_SERVICE_INSTANCE, b""))) % partitions


def _label(any_value: bytes) -> bytes:
    """The label text of an AnyValue body holding only a ``string_value`` (field 1); any other
    value by its bytes. Two different encodings of one label value (an int and its decimal
    string) would land apart; no SDK writes service identity that way."""
    if any_value[:1] == b"\x0a":
        try:
            length, start = wire.read_varint(any_value, 1, len(any_value))
        except wire.WireError:
            return any_value
        if start + length == len(any_value):
            return any_value[start:]
    return any_value
