"""Content checks of one ResourceX by protobuf's own C parser (upb), with a nesting limit.

``wire.prepare`` walks only the framing of a request; a ResourceX that is framed well can still
hold what a store's decoder refuses: a string field that is not UTF-8, a varint over ten
bytes, a field cut short inside a nested message, or an ``AnyValue`` nested so deep that a
recursive converter or a JSON encoder gives up. Every sink decodes with upb (Elasticsearch,
remote write), with Go's pdata (Jaeger, the Collector reading our topics) or with the file
sink's converter, which follows upb's rules (wrong wire types are unknown fields, over-wide
varints are truncated to their field's width). So a ResourceX that upb parses, within the
nesting limit below, is one that every sink takes, and the edge answers OK only for those.

Measured on the 2-core reference machine: upb parses a 512-span ResourceSpans (230 KB) in
about 0.45 ms, roughly what the framing walk costs; see ``tests/unit/test_bench_ingest_path.py``.

Nesting limit. upb refuses messages nested deeper than 100 levels. To make the limit
ours, the ResourceX is parsed inside ``100 - MAX_DEPTH`` levels of a wrapper message, so the
deepest message allowed is ``MAX_DEPTH`` levels below the ResourceX. OTLP's own structure takes
at most 7 of them (ResourceMetrics > ScopeMetrics > Metric > Histogram > HistogramDataPoint >
Exemplar > KeyValue > AnyValue); each nested ``ArrayValue`` adds 2 and each ``KeyValueList``
3, so 16 nested arrays or kvlists fit wherever a value stands, and no value nests more than
26 arrays or 17 kvlists deep. Converters and JSON encoders handle that depth (orjson allows 255).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gateway.signals import Signal
from gateway.wire import encode_varint

__all__ = ["MAX_DEPTH", "MAX_NESTED_VALUES", "check_resource"]

MAX_DEPTH = 55
"""Messages may nest at most this many levels below a ResourceX (the ResourceX is level 0)."""
MAX_NESTED_VALUES = 16
"""AnyValue arrays/kvlists that always fit inside one another, wherever the value stands."""

_UPB_MAX_DEPTH = 100  # upb_DecodeOptions_MaxDepth's default, which Python's upb always uses
_WRAPS = _UPB_MAX_DEPTH - MAX_DEPTH
# Field of the wrapper that holds each signal's ResourceX.
_FIELD = {Signal.TRACES: 2, Signal.LOGS: 3, Signal.METRICS: 4}


def _wrapper_class() -> Any:
    """``message Nest { Nest next = 1; ResourceSpans spans = 2; ResourceLogs logs = 3;
    ResourceMetrics metrics = 4; }`` in a pool of its own, so nothing global changes."""
    pool = descriptor_pool.DescriptorPool()
    for module in (trace_pb2, logs_pb2, metrics_pb2):
        _add_with_deps(pool, module.DESCRIPTOR)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="telemetry_gateway/nest.proto", package="telemetry_gateway.internal", syntax="proto3",
        dependency=[trace_pb2.DESCRIPTOR.name, logs_pb2.DESCRIPTOR.name, metrics_pb2.DESCRIPTOR.name])
    msg = fdp.message_type.add(name="Nest")
    label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    mtype = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    for number, name, type_name in (
        (1, "next", ".telemetry_gateway.internal.Nest"),
        (2, "spans", ".opentelemetry.proto.trace.v1.ResourceSpans"),
        (3, "logs", ".opentelemetry.proto.logs.v1.ResourceLogs"),
        (4, "metrics", ".opentelemetry.proto.metrics.v1.ResourceMetrics"),
    ):
        msg.field.add(name=name, number=number, label=label, type=mtype, type_name=type_name)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("telemetry_gateway.internal.Nest"))


def _add_with_deps(pool: descriptor_pool.DescriptorPool, fd: Any) -> None:
    for dep in fd.dependencies:
        _add_with_deps(pool, dep)
    try:
        pool.FindFileByName(fd.name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        pool.Add(proto)


_NEST = _wrapper_class()


def _prefix(signal: Signal, size: int) -> bytes:
    """The bytes before a ResourceX body of ``size`` bytes that put it ``_WRAPS`` levels deep."""
    heads = [bytes([_FIELD[signal] << 3 | 2]) + encode_varint(size)]
    inner = size + len(heads[0])
    for _ in range(_WRAPS - 1):
        head = b"\x0a" + encode_varint(inner)
        heads.append(head)
        inner += len(head)
    return b"".join(reversed(heads))


def check_resource(signal: Signal, body: bytes | memoryview) -> str | None:
    """None if every sink can decode this ResourceX body (without its tag and length), else why not.

    Raises nothing: a refusal is a value, so ``wire.prepare`` can drop this ResourceX alone.
    """
    try:
        _NEST.FromString(_prefix(signal, len(body)) + body)
    except DecodeError as exc:
        return _reason(str(exc))
    except Exception as exc:  # upb raises other types for some inputs; never a 5xx for them
        return f"not decodable: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _reason(upb_message: str) -> str:
    """upb's message, said in the request's terms (it names the wrapper or an inner type)."""
    if "MaxDepth" in upb_message:
        return (f"messages nested more than {MAX_DEPTH} levels deep (at most {MAX_NESTED_VALUES} nested "
                "AnyValue arrays/kvlists are guaranteed)")
    if "UTF-8" in upb_message:
        return "a string field is not valid UTF-8"
    return "not a valid protobuf message: " + upb_message.split(": ", 1)[-1]
