"""OTLP spans and logs to Elasticsearch documents in Elastic's OpenTelemetry-native layout.

The layout follows the collector's ``elasticsearchexporter`` ``otel`` mapping mode, so
dashboards and queries written for that exporter work here: ``@timestamp``, hex ids,
``attributes`` keyed by the full dotted attribute name, ``resource.attributes``,
``scope.{name,version,attributes}``, span ``kind``/``status.code`` as the OTLP enum names,
``duration`` in nanoseconds, and for logs ``body.text`` or ``body.structured``.

Each document gets an ``_id`` from the Kafka coordinates of the record it came from and its
position in that record, so a redelivered record overwrites the same documents instead of
adding copies (docs/architecture.md principle 3). A record that does not decode whole is converted part by
part (``pipelines.convert.parts``): the parts that decode become documents at the positions
they have in the whole record, the others come back as ``BadPart`` for the dead-letter topic.

Tenants name stores one to one: ``tenant_index_part`` is injective, so ``Acme`` and ``acme``
(or ``a/b`` and ``a_b``) never share a data stream.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.convert.otlp_values import any_value, attributes, resource_tenant
from pipelines.convert.parts import BadPart, isolate, item_request

Doc = dict[str, Any]

TRACES_PREFIX = "traces-otel-"
LOGS_PREFIX = "logs-otel-"
INDEX_PREFIX = {Signal.TRACES: TRACES_PREFIX, Signal.LOGS: LOGS_PREFIX}

# OTLP enum numbers to the names the otel mapping mode stores.
SPAN_KIND = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODE = ("Unset", "Ok", "Error")

# Index names: at most 255 bytes. The tenant part stays within 200, which leaves room for the
# prefix and for the ``.ds-<name>-<yyyy.mm.dd>-<generation>`` backing index names.
_MAX_TENANT_CHARS = 200
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.")
_ESCAPE = "_"
_HASH_MARK = "__"  # never made by escaping: an escape is "_" and two hex digits
_HASH_CHARS = 16


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One document ready for the bulk API: target index, idempotent id, JSON source.

    ``position`` is the document's item number in its record (wire order), from which ``doc_id``
    is made and the item's own bytes can be cut out again (``parts.item_request``).
    """

    index: str
    doc_id: str
    source: bytes
    position: int = 0


@lru_cache(maxsize=1024)
def tenant_index_part(tenant: str) -> str:
    """Tenant as an index-name component, one to one: distinct tenants never share a store.

    Lower-case ASCII letters, digits and ``.`` are kept; every other byte of the UTF-8 form
    (upper case, ``-``, ``_``, ``/``, spaces, non-ASCII) becomes ``_`` and two lower-case hex
    digits, so ``Acme`` -> ``_41cme``, ``acme`` -> ``acme``, ``a/b`` -> ``a_2fb``, ``a_b`` ->
    ``a_5fb``. The result holds only ``[a-z0-9._]``: what Elasticsearch allows in index names
    (no upper case, no ``\\ / * ? " < > | , # :`` or space) and in a data stream namespace (no
    ``-``); a leading ``_`` or ``.`` is harmless behind the ``traces-otel-``/``logs-otel-``
    prefix. The empty tenant is ``_`` (no escape is a lone
    ``_``). A result longer than 200 characters is cut at an escape boundary and ends in ``__``
    and 16 hex digits of the SHA-256 of the tenant: ``__`` never occurs otherwise, so long and
    short names cannot meet, and two long ones meet only on a 64-bit hash collision.
    """
    out = []
    for byte in tenant.encode():
        out.append(chr(byte) if byte in _KEPT else f"{_ESCAPE}{byte:02x}")
    part = "".join(out) or _ESCAPE
    if len(part) <= _MAX_TENANT_CHARS:
        return part
    keep = _MAX_TENANT_CHARS - len(_HASH_MARK) - _HASH_CHARS
    cut = part[:keep]
    if _ESCAPE in cut[-2:]:  # do not end inside an escape
        cut = cut[:cut.rindex(_ESCAPE, len(cut) - 2)]
    return cut + _HASH_MARK + hashlib.sha256(tenant.encode()).hexdigest()[:_HASH_CHARS]


def index_name(signal: Signal, tenant: str) -> str:
    return INDEX_PREFIX[signal] + tenant_index_part(tenant)


def document_id(record: BusRecord, position: int) -> str:
    """``<topic>-<partition>-<offset>-<position>``: stable across redelivery of the record."""
    return f"{record.topic}-{record.partition}-{record.offset}-{position}"


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_nanos(unix_nano: int) -> str:
    """RFC 3339 with nanoseconds, what a ``date_nanos`` field keeps without loss."""
    seconds, frac = divmod(unix_nano, 1_000_000_000)
    return f"{_second_prefix(seconds)}.{frac:09d}Z"


def _resource_part(resource: Resource, schema_url: str) -> Doc:
    part: Doc = {"attributes": attributes(resource.attributes)}
    if resource.dropped_attributes_count:
        part["dropped_attributes_count"] = resource.dropped_attributes_count
    if schema_url:
        part["schema_url"] = schema_url
    return part


def _scope_part(scope: InstrumentationScope, schema_url: str) -> Doc:
    part: Doc = {"name": scope.name}
    if scope.version:
        part["version"] = scope.version
    if scope.attributes:
        part["attributes"] = attributes(scope.attributes)
    if scope.dropped_attributes_count:
        part["dropped_attributes_count"] = scope.dropped_attributes_count
    if schema_url:
        part["schema_url"] = schema_url
    return part


def _data_stream(kind: str, tenant: str) -> Doc:
    return {"type": kind, "dataset": "otel", "namespace": tenant_index_part(tenant)}


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every document of one scope shares: built, and serialized, once per scope."""

    tenant: str
    parts: Doc  # data_stream, resource, scope
    json: bytes  # the same members as JSON, without the enclosing braces


def _walk(resources: Iterable[Any], scopes: str, items: str, kind: str,
          fallback_tenant: str) -> Iterator[tuple[_Shared, Any]]:
    """(shared parts, span or log record) for every item of a decoded request."""
    for rx in resources:
        tenant = resource_tenant(rx.resource.attributes, fallback_tenant)
        resource = _resource_part(rx.resource, rx.schema_url)
        stream = _data_stream(kind, tenant)
        for sx in getattr(rx, scopes):
            scope = _scope_part(sx.scope, sx.schema_url)
            parts = {"data_stream": stream, "resource": resource, "scope": scope}
            shared = _Shared(tenant, parts, orjson.dumps(parts)[1:-1])
            for item in getattr(sx, items):
                yield shared, item


def _span_doc(span: Span) -> Doc:
    """A span's own fields (without the shared data_stream/resource/scope)."""
    start = span.start_time_unix_nano
    doc: Doc = {
        "@timestamp": iso_nanos(start),
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "name": span.name,
        "kind": SPAN_KIND[span.kind] if span.kind < len(SPAN_KIND) else str(span.kind),
        "duration": max(span.end_time_unix_nano - start, 0),
        "attributes": attributes(span.attributes),
        "status": {
            "code": STATUS_CODE[span.status.code] if span.status.code < 3 else "Unset",
        },
    }
    if span.parent_span_id:
        doc["parent_span_id"] = span.parent_span_id.hex()
    if span.trace_state:
        doc["trace_state"] = span.trace_state
    if span.status.message:
        doc["status"]["message"] = span.status.message
    if span.events:
        doc["events"] = [
            {"name": ev.name, "timestamp": iso_nanos(ev.time_unix_nano),
             "attributes": attributes(ev.attributes)}
            for ev in span.events
        ]
    if span.links:
        doc["links"] = [
            {"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(),
             "trace_state": ln.trace_state, "attributes": attributes(ln.attributes)}
            for ln in span.links
        ]
    for key in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        n = getattr(span, key)
        if n:
            doc[key] = n
    return doc


def log_body(body: AnyValue) -> Doc:
    """``{"text": ...}`` for scalar bodies, ``{"structured": {...}}`` for maps and arrays.

    ``body.structured`` is a ``flattened`` field, which wants an object at its root, so an
    array body is kept under ``value``.
    """
    kind = body.WhichOneof("value")
    if kind is None:
        return {}
    value = any_value(body)
    if kind == "kvlist_value":
        return {"structured": value}
    if kind == "array_value":
        return {"structured": {"value": value}}
    if kind == "string_value":
        return {"text": value}
    if kind == "bool_value":
        return {"text": "true" if value else "false"}
    return {"text": str(value)}


def _log_doc(lr: LogRecord) -> Doc:
    """A log record's own fields (without the shared data_stream/resource/scope)."""
    observed = lr.observed_time_unix_nano
    # Per the OTLP spec a missing event time falls back to the observed time.
    doc: Doc = {
        "@timestamp": iso_nanos(lr.time_unix_nano or observed),
        "severity_number": lr.severity_number,
        "attributes": attributes(lr.attributes),
    }
    if observed:
        doc["observed_timestamp"] = iso_nanos(observed)
    if lr.severity_text:
        doc["severity_text"] = lr.severity_text
    body = log_body(lr.body)
    if body:
        doc["body"] = body
    if lr.trace_id:
        doc["trace_id"] = lr.trace_id.hex()
    if lr.span_id:
        doc["span_id"] = lr.span_id.hex()
    if lr.event_name:
        doc["event_name"] = lr.event_name
    if lr.dropped_attributes_count:
        doc["dropped_attributes_count"] = lr.dropped_attributes_count
    return doc


def _decoder(signal: Signal) -> Any:
    if signal is Signal.TRACES:
        return ExportTraceServiceRequest.FromString
    return ExportLogsServiceRequest.FromString


def _decoded_items(signal: Signal, request: Any, fallback_tenant: str) -> Iterator[tuple[_Shared, Doc]]:
    if signal is Signal.TRACES:
        for shared, span in _walk(request.resource_spans, "scope_spans", "spans", "traces", fallback_tenant):
            yield shared, _span_doc(span)
    else:
        for shared, lr in _walk(request.resource_logs, "scope_logs", "log_records", "logs", fallback_tenant):
            yield shared, _log_doc(lr)


def _items(signal: Signal, payload: bytes, fallback_tenant: str) -> Iterator[tuple[_Shared, Doc]]:
    yield from _decoded_items(signal, _decoder(signal)(payload), fallback_tenant)


def span_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per span of a serialized ExportTraceServiceRequest."""
    for shared, doc in _items(Signal.TRACES, payload, fallback_tenant):
        yield shared.tenant, {**doc, **shared.parts}


def log_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per log record of a serialized ExportLogsServiceRequest."""
    for shared, doc in _items(Signal.LOGS, payload, fallback_tenant):
        yield shared.tenant, {**doc, **shared.parts}


@dataclass(frozen=True, slots=True)
class RecordDocuments:
    """What one consumed record becomes: documents, and the parts that do not decode."""

    items: list[BulkItem]
    bad: list[BadPart]


def record_documents(record: BusRecord) -> RecordDocuments:
    """Every document of one consumed record, with its index and idempotent id, and its bad parts.

    Positions (hence ``_id`` s) are the items' places in the whole record, the same whether it
    decodes whole or part by part. The parts a scope's documents share are serialized once and
    spliced into each document's JSON, which is most of the serializing work saved for
    SDK-shaped batches.
    """
    parts = isolate(record.value, _decoder(record.signal))
    items = [
        BulkItem(index_name(record.signal, shared.tenant), document_id(record, start + i),
                 orjson.dumps(doc)[:-1] + b"," + shared.json + b"}", start + i)
        for start, request in parts.good
        for i, (shared, doc) in enumerate(_decoded_items(record.signal, request, record.tenant))
    ]
    return RecordDocuments(items, parts.bad)


def bulk_items(record: BusRecord) -> list[BulkItem]:
    """The documents of ``record_documents`` (parts that do not decode are left out)."""
    return record_documents(record).items


def item_part(record: BusRecord, item: BulkItem) -> bytes:
    """The Export request of ``item`` alone (with its resource and scope), to dead-letter it."""
    return item_request(record.value, item.position)


def bulk_body(items: Sequence[BulkItem], op: str = "create") -> bytes:
    """NDJSON for ``POST /_bulk``: an action line and the source per document.

    ``create`` is the action data streams accept; a repeated ``_id`` answers 409 (already
    written), which is what makes redelivery harmless.
    """
    parts: list[bytes] = []
    for it in items:
        parts.append(orjson.dumps({op: {"_index": it.index, "_id": it.doc_id}}))
        parts.append(it.source)
    parts.append(b"")
    return b"\n".join(parts)
