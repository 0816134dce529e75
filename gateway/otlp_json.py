"""The OTLP/JSON mapping <-> protobuf bytes.

OTLP/JSON is the proto3 JSON mapping with one twist: trace and span ids are hex strings, not
base64 (enums as ints, int64 as string or number and lowerCamelCase are plain proto3 JSON).
So the id fields are rewritten between hex and base64 around ``json_format``, on the known
paths only, and everything after the receiver handles protobuf bytes like any other request.
Unknown JSON fields are ignored, as the OTLP spec asks of receivers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.signals import Signal
from gateway.wire import WireError

__all__ = ["json_to_proto", "proto_to_json", "response_json"]

_REQUESTS: dict[Signal, Any] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}
_REJECTED_FIELD = {
    Signal.TRACES: "rejectedSpans",
    Signal.LOGS: "rejectedLogRecords",
    Signal.METRICS: "rejectedDataPoints",
}
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


def _list(obj: Any, *names: str) -> list[Any]:
    """The list under the first of ``names`` present (camelCase or the proto field name)."""
    if isinstance(obj, dict):
        for name in names:
            value = obj.get(name)
            if isinstance(value, list):
                return value
    return []


def _id_holders(signal: Signal, doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) for every JSON object that may carry trace/span ids."""
    if signal is Signal.TRACES:
        for ri, rs in enumerate(_list(doc, "resourceSpans", "resource_spans")):
            for si, ss in enumerate(_list(rs, "scopeSpans", "scope_spans")):
                for pi, span in enumerate(_list(ss, "spans")):
                    if not isinstance(span, dict):
                        continue
                    path = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                    yield path, span
                    for li, link in enumerate(_list(span, "links")):
                        if isinstance(link, dict):
                            yield f"{path}.links[{li}]", link
    elif signal is Signal.LOGS:
        for ri, rl in enumerate(_list(doc, "resourceLogs", "resource_logs")):
            for si, sl in enumerate(_list(rl, "scopeLogs", "scope_logs")):
                for li, rec in enumerate(_list(sl, "logRecords", "log_records")):
                    if isinstance(rec, dict):
                        yield f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]", rec
    else:
        for ri, rm in enumerate(_list(doc, "resourceMetrics", "resource_metrics")):
            for si, sm in enumerate(_list(rm, "scopeMetrics", "scope_metrics")):
                for mi, metric in enumerate(_list(sm, "metrics")):
                    if not isinstance(metric, dict):
                        continue
                    for kind in _METRIC_KINDS:
                        data = metric.get(kind)
                        for pi, point in enumerate(_list(data, "dataPoints", "data_points")):
                            for ei, ex in enumerate(_list(point, "exemplars")):
                                if isinstance(ex, dict):
                                    yield (f"resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}].{kind}"
                                           f".dataPoints[{pi}].exemplars[{ei}]", ex)


def _rewrite_ids(signal: Signal, doc: Any, convert: Callable[[str, str], str]) -> None:
    for path, obj in _id_holders(signal, doc):
        for key in _ID_KEYS:
            value = obj.get(key)
            if isinstance(value, str) and value:
                obj[key] = convert(value, f"{path}.{key}")


def _hex_to_b64(value: str, where: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise WireError(f"{where}: {value[:40]!r} is not a hex-encoded id") from None
    return base64.b64encode(raw).decode()


def _b64_to_hex(value: str, where: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except binascii.Error:
        raise WireError(f"{where}: {value[:40]!r} is not base64") from None


def json_to_proto(signal: Signal, body: bytes) -> bytes:
    """OTLP/JSON Export request -> serialized protobuf request; WireError says what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise WireError(f"OTLP/JSON {signal.value} request must be a JSON object, got {type(doc).__name__}")
    _rewrite_ids(signal, doc, _hex_to_b64)
    msg = _REQUESTS[signal]()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise WireError(f"invalid OTLP/JSON {signal.value} request: {e}") from None
    data: bytes = msg.SerializeToString()
    return data


def proto_to_json(signal: Signal, payload: bytes) -> bytes:
    """Serialized protobuf request -> compact OTLP/JSON (hex ids, int enums, camelCase)."""
    msg = _REQUESTS[signal]()
    try:
        msg.ParseFromString(payload)
    except Exception as e:  # upb raises its own DecodeError type
        raise WireError(f"invalid {signal.value} request: {e}") from None
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _rewrite_ids(signal, doc, _b64_to_hex)
    return orjson.dumps(doc)


def response_json(rejected: int, message: str, signal: Signal) -> bytes:
    """Export*ServiceResponse as JSON: ``{}`` on full success, else ``partialSuccess``."""
    if rejected <= 0 and not message:
        return b"{}"
    partial: dict[str, Any] = {}
    if rejected > 0:
        partial[_REJECTED_FIELD[signal]] = str(rejected)  # int64 -> string, as proto3 JSON
    if message:
        partial["errorMessage"] = message
    return orjson.dumps({"partialSuccess": partial})
