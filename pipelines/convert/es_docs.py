"""OTLP spans and logs to Elasticsearch documents in Elastic's OpenTelemetry-native layout.

Where documents go: data streams ``<type>-<dataset>.otel-<namespace>`` as Elasticsearch's OTel
data plugin and Elastic's OTLP endpoint name them (patterns ``traces-*.otel-*``,
``logs-*.otel-*``): ``traces-generic.otel-<ns>`` and ``logs-generic.otel-<ns>``, the namespace
being the tenant mapped one to one (``tenant_index_part``). ``data_stream.type``, ``.dataset``
and ``.namespace`` in every document say the same as the name. The stream is chosen from the
gateway-stamped ``tenant.id`` only: attributes a client sends that route data in the
Collector's exporter (``data_stream.dataset``, ``data_stream.namespace``,
``elasticsearch.index``, ...) are kept as plain attributes and never choose a stream.

The documents follow the Collector's ``elasticsearchexporter`` ``otel`` mapping mode, so
dashboards and queries written for that exporter work here: ``@timestamp``, hex ids,
``attributes`` keyed by the full dotted attribute name, ``resource.attributes``,
``scope.{name,version,attributes}``, span ``kind``/``status.code`` as the OTLP enum names,
``duration`` in nanoseconds, and for logs ``body.text`` or ``body.structured``. As there:

- every span event is also a log document in the tenant's logs stream (``@timestamp`` the
  event's time, ``event_name``, the span's ``trace_id``/``span_id``, the event's attributes
  plus ``event.name``, the span's resource and scope), which is what Elastic's views read for
  exceptions; the span document keeps its ``events`` too, so a span read alone is whole (the
  exporter leaves them out of the span);
- ``<prefix>geo.location.lat``/``lon`` double attributes become one ``<prefix>geo.location``
  ``[lon, lat]`` (a ``geo_point`` under Elastic's mappings) when both are there;
- a log body that is an array of maps is ``body.structured`` as that array (other arrays
  under ``body.structured.value``); a log without ``event_name`` takes its ``event.name``
  attribute's;
- links keep ``dropped_attributes_count``.

Where we differ on purpose: bytes values are base64 (the OTel spec's JSON form; the exporter
writes hex); a span that ends before it starts has ``duration`` 0 (the exporter's unsigned
difference wraps to a number Elasticsearch refuses); a log without an observed time has no
``observed_timestamp`` (the exporter writes epoch 0); a span event without a time takes its
span's start (not epoch 0).

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
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.convert.otlp_values import JSONValue, any_value, resource_tenant
from pipelines.convert.parts import BadPart, isolate, item_request

Doc = dict[str, Any]

# ``<type>-<dataset>.otel-``: the dataset is ``generic`` as Elastic's OTLP endpoint names data
# that does not say otherwise.
DATASET = "generic.otel"
STREAM_TYPE = {Signal.TRACES: "traces", Signal.LOGS: "logs"}
INDEX_PREFIX = {signal: f"{kind}-{DATASET}-" for signal, kind in STREAM_TYPE.items()}
TRACES_PREFIX = INDEX_PREFIX[Signal.TRACES]
LOGS_PREFIX = INDEX_PREFIX[Signal.LOGS]

# OTLP enum numbers to the names the otel mapping mode stores.
SPAN_KIND = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODE = ("Unset", "Ok", "Error")

# A data stream namespace is at most 100 characters (Elastic's data stream naming scheme); the
# index name (at most 255 bytes) then leaves room for the ``.ds-<name>-<yyyy.mm.dd>-<generation>``
# backing index names.
_MAX_TENANT_CHARS = 100
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.")
_ESCAPE = "_"
_HASH_MARK = "__"  # never made by escaping: an escape is "_" and two hex digits
_HASH_CHARS = 16


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 3x the cost of
# building one, and there is one per document (about 3 % of a span's conversion).
@dataclass(slots=True)
class BulkItem:
    """One document ready for the bulk API: target index, idempotent id, JSON source.

    ``position`` is the document's item number in its record (wire order), from which ``doc_id``
    is made and the item's own bytes can be cut out again (``parts.item_request``). A span
    event's log document has its span's position and ``event`` >= 0.
    """

    index: str
    doc_id: str
    source: bytes
    position: int = 0
    event: int = -1  # the span event number for a span event's log document, else -1


@lru_cache(maxsize=1024)
def tenant_index_part(tenant: str) -> str:
    """Tenant as an index-name component, one to one: distinct tenants never share a store.

    Lower-case ASCII letters, digits and ``.`` are kept; every other byte of the UTF-8 form
    (upper case, ``-``, ``_``, ``/``, spaces, non-ASCII) becomes ``_`` and two lower-case hex
    digits, so ``Acme`` -> ``_41cme``, ``acme`` -> ``acme``, ``a/b`` -> ``a_2fb``, ``a_b`` ->
    ``a_5fb``. The result holds only ``[a-z0-9._]``: what Elasticsearch allows in index names
    (no upper case, no ``\\ / * ? " < > | , # :`` or space) and in a data stream namespace (no
    ``-``); a leading ``_`` or ``.`` is harmless behind the ``traces-generic.otel-`` /
    ``logs-generic.otel-`` prefix. The empty tenant is ``_`` (no escape is a lone ``_``). A
    result longer than 100 characters (the namespace limit) is cut at an escape boundary and
    ends in ``__`` and 16 hex digits of the SHA-256 of the tenant: ``__`` never occurs
    otherwise, so long and short names cannot meet, and two long ones meet only on a 64-bit
    hash collision.
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
    """``traces-generic.otel-<ns>`` / ``logs-generic.otel-<ns>``, ns = ``tenant_index_part(tenant)``."""
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
    part: Doc = {"attributes": document_attributes(resource.attributes)}
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
        part["attributes"] = document_attributes(scope.attributes)
    if scope.dropped_attributes_count:
        part["dropped_attributes_count"] = scope.dropped_attributes_count
    if schema_url:
        part["schema_url"] = schema_url
    return part


_GEO_LAT, _GEO_LON, _GEO = "geo.location.lat", "geo.location.lon", "geo.location"


def document_attributes(kvs: Sequence[KeyValue]) -> dict[str, JSONValue]:
    """An attribute map as the document stores it: ``{dotted key: value}``.

    Values as ``otlp_values.any_value`` gives them (bytes as base64). Then, as the Collector's
    exporter does for every top-level attribute map: double attributes ``geo.location.lat`` and
    ``geo.location.lon``, or ``<prefix>.geo.location.lat``/``lon``, with both present become
    one ``<prefix>.geo.location`` = ``[lon, lat]`` (GeoJSON order, what a ``geo_point``
    takes), placed after the other keys; a lone half stays as it was. Nested maps are left
    alone.
    """
    out: dict[str, JSONValue] = {}
    geo: list[str] | None = None
    # Strings, then ints, are most attributes: one WhichOneof and a direct read for them (this
    # loop is the conversions' hot spot, about 40 % of a span document).
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = v.int_value
        elif kind == "double_value":
            key = kv.key
            out[key] = v.double_value
            if key.endswith((_GEO_LAT, _GEO_LON)):
                geo = [key] if geo is None else [*geo, key]
        else:
            out[kv.key] = any_value(v)
    if geo is not None:
        _merge_geo(out, geo)
    return out


def _merge_geo(out: dict[str, JSONValue], keys: list[str]) -> None:
    """Merge lat/lon pairs among ``keys`` (double attributes ending in geo.location.lat/lon)."""
    for key in keys:
        prefix = key[:-len(_GEO_LAT)]
        if prefix and not prefix.endswith("."):
            continue  # "xgeo.location.lat" is not a geo attribute
        lat, lon = prefix + _GEO_LAT, prefix + _GEO_LON
        if lat in out and lon in out:
            out[prefix + _GEO] = [out.pop(lon), out.pop(lat)]


def data_stream(signal: Signal, tenant: str) -> Doc:
    """``{"type", "dataset", "namespace"}``: the parts of ``index_name(signal, tenant)``."""
    return {"type": STREAM_TYPE[signal], "dataset": DATASET, "namespace": tenant_index_part(tenant)}


@dataclass(frozen=True, slots=True)
class _Target:
    """One stream of one scope's documents: its name, and the JSON that ends each document
    (``,"data_stream":{...},"resource":{...},"scope":{...}}``), serialized once per scope."""

    index: str
    tail: bytes


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every document of one scope shares: built, and serialized, once per scope."""

    tenant: str
    parts: Doc  # resource, scope
    traces: _Target
    logs: _Target

    @classmethod
    def of(cls, tenant: str, parts: Doc) -> _Shared:
        members = orjson.dumps(parts)[1:-1]
        traces, logs = (
            _Target(index_name(signal, tenant),
                    b',"data_stream":' + orjson.dumps(data_stream(signal, tenant)) + b"," + members + b"}")
            for signal in (Signal.TRACES, Signal.LOGS))
        return cls(tenant, parts, traces, logs)

    def document(self, signal: Signal, own: Doc) -> Doc:
        """``own`` with the data stream of ``signal`` and the resource and scope."""
        return {**own, "data_stream": data_stream(signal, self.tenant), **self.parts}


def _source(own: Doc, target: _Target) -> bytes:
    """The JSON of the whole document: ``own`` serialized, the shared members spliced on."""
    return orjson.dumps(own)[:-1] + target.tail


def _walk(resources: Iterable[Any], scopes: str, items: str,
          fallback_tenant: str) -> Iterator[tuple[_Shared, Any]]:
    """(shared parts, span or log record) for every item of a decoded request."""
    for rx in resources:
        tenant = resource_tenant(rx.resource.attributes, fallback_tenant)
        resource = _resource_part(rx.resource, rx.schema_url)
        for sx in getattr(rx, scopes):
            scope = _scope_part(sx.scope, sx.schema_url)
            parts = {"resource": resource, "scope": scope}
            shared = _Shared.of(tenant, parts)
            for item in getattr(sx, items):
                yield shared, item


def _span_doc(span: Span) -> tuple[Doc, list[Doc]]:
    """A span's own fields (without the shared data_stream/resource/scope), and a log
    document's own fields per span event."""
    # Each read of a protobuf field costs a call (and a wrapper for a message): read each once.
    start = span.start_time_unix_nano
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    kind, status = span.kind, span.status
    code = status.code
    doc: Doc = {
        "@timestamp": iso_nanos(start),
        "trace_id": trace_id,
        "span_id": span_id,
        "name": span.name,
        "kind": SPAN_KIND[kind] if kind < len(SPAN_KIND) else str(kind),
        # The Collector's unsigned difference wraps for an end before the start; 0 is the truth
        # that a long field takes.
        "duration": max(span.end_time_unix_nano - start, 0),
        "attributes": document_attributes(span.attributes),
        "status": {"code": STATUS_CODE[code] if code < 3 else "Unset"},
    }
    if parent := span.parent_span_id:
        doc["parent_span_id"] = parent.hex()
    if trace_state := span.trace_state:
        doc["trace_state"] = trace_state
    if message := status.message:
        doc["status"]["message"] = message
    event_docs: list[Doc] = []
    if span.events:
        events = []
        for ev in span.events:
            when = iso_nanos(ev.time_unix_nano or start)
            attrs = document_attributes(ev.attributes) if ev.attributes else {}
            event: Doc = {"name": ev.name, "timestamp": when, "attributes": attrs}
            log: Doc = {"@timestamp": when, "trace_id": trace_id, "span_id": span_id}
            if dropped := ev.dropped_attributes_count:
                event["dropped_attributes_count"] = log["dropped_attributes_count"] = dropped
            if ev.name:
                log["event_name"] = ev.name
                log["attributes"] = {**attrs, "event.name": ev.name}
            elif attrs:
                log["attributes"] = attrs
            events.append(event)
            event_docs.append(log)
        doc["events"] = events
    if span.links:
        links = []
        for ln in span.links:
            link: Doc = {"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(),
                         "attributes": document_attributes(ln.attributes)}
            if ln.trace_state:
                link["trace_state"] = ln.trace_state
            if ln.dropped_attributes_count:
                link["dropped_attributes_count"] = ln.dropped_attributes_count
            links.append(link)
        doc["links"] = links
    for key in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        n = getattr(span, key)
        if n:
            doc[key] = n
    return doc, event_docs


def log_body(body: AnyValue) -> Doc:
    """``{"text": ...}`` for scalar bodies, ``{"structured": ...}`` for maps and arrays.

    As the Collector's exporter: a map is ``structured`` as is, an array whose elements are all
    maps (or an empty array) is ``structured`` as that array (``body.structured`` is a
    ``flattened`` field, which takes an object or an array of objects), and any other array is
    kept under ``structured.value``. Scalars are text: bools ``true``/``false``, numbers as
    Python prints them, bytes as base64.
    """
    kind = body.WhichOneof("value")
    if kind is None:
        return {}
    value = any_value(body)
    if kind == "kvlist_value":
        return {"structured": value}
    if kind == "array_value":
        if all(v.WhichOneof("value") == "kvlist_value" for v in body.array_value.values):
            return {"structured": value}
        return {"structured": {"value": value}}
    if kind == "string_value":
        return {"text": value}
    if kind == "bool_value":
        return {"text": "true" if value else "false"}
    return {"text": str(value)}


def _log_doc(lr: LogRecord) -> Doc:
    """A log record's own fields (without the shared data_stream/resource/scope)."""
    observed = lr.observed_time_unix_nano
    attrs = document_attributes(lr.attributes)
    # Per the OTLP spec a missing event time falls back to the observed time.
    doc: Doc = {
        "@timestamp": iso_nanos(lr.time_unix_nano or observed),
        "severity_number": lr.severity_number,
        "attributes": attrs,
    }
    # No observed time is left out, not written as epoch 0 (as the Collector does).
    if observed:
        doc["observed_timestamp"] = iso_nanos(observed)
    if severity_text := lr.severity_text:
        doc["severity_text"] = severity_text
    if body := log_body(lr.body):
        doc["body"] = body
    if trace_id := lr.trace_id:
        doc["trace_id"] = trace_id.hex()
    if span_id := lr.span_id:
        doc["span_id"] = span_id.hex()
    event_name = lr.event_name or attrs.get("event.name")
    if event_name and isinstance(event_name, str):
        doc["event_name"] = event_name
    if dropped := lr.dropped_attributes_count:
        doc["dropped_attributes_count"] = dropped
    return doc


def _decoder(signal: Signal) -> Any:
    if signal is Signal.TRACES:
        return ExportTraceServiceRequest.FromString
    return ExportLogsServiceRequest.FromString


_NO_EVENTS: list[Doc] = []


def _decoded_items(signal: Signal, request: Any,
                   fallback_tenant: str) -> Iterator[tuple[_Shared, Doc, list[Doc]]]:
    """(shared parts, the item's own fields, its span events' log documents' own fields)."""
    if signal is Signal.TRACES:
        for shared, span in _walk(request.resource_spans, "scope_spans", "spans", fallback_tenant):
            doc, events = _span_doc(span)
            yield shared, doc, events
    else:
        for shared, lr in _walk(request.resource_logs, "scope_logs", "log_records", fallback_tenant):
            yield shared, _log_doc(lr), _NO_EVENTS


def _items(signal: Signal, payload: bytes, fallback_tenant: str) -> Iterator[tuple[_Shared, Doc, list[Doc]]]:
    yield from _decoded_items(signal, _decoder(signal)(payload), fallback_tenant)


def span_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per span of a serialized ExportTraceServiceRequest."""
    for shared, doc, _ in _items(Signal.TRACES, payload, fallback_tenant):
        yield shared.tenant, shared.document(Signal.TRACES, doc)


def span_event_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, log document) per span event of a serialized ExportTraceServiceRequest."""
    for shared, _, events in _items(Signal.TRACES, payload, fallback_tenant):
        for event in events:
            yield shared.tenant, shared.document(Signal.LOGS, event)


def log_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per log record of a serialized ExportLogsServiceRequest."""
    for shared, doc, _ in _items(Signal.LOGS, payload, fallback_tenant):
        yield shared.tenant, shared.document(Signal.LOGS, doc)


@dataclass(frozen=True, slots=True)
class RecordDocuments:
    """What one consumed record becomes: documents, and the parts that do not decode."""

    items: list[BulkItem]
    bad: list[BadPart]


def record_documents(record: BusRecord) -> RecordDocuments:
    """Every document of one consumed record, with its index and idempotent id, and its bad parts.

    Positions (hence ``_id`` s) are the items' places in the whole record, the same whether it
    decodes whole or part by part. A span's events follow its document, in the tenant's logs
    stream, with ids ``<span's id>-e<event number>`` (so as stable as the span's). The parts a
    scope's documents share are serialized once and spliced into each document's JSON, which
    is most of the serializing work saved for SDK-shaped batches.
    """
    signal = record.signal
    parts = isolate(record.value, _decoder(signal))
    items: list[BulkItem] = []
    traces = signal is Signal.TRACES
    for start, request in parts.good:
        for i, (shared, doc, events) in enumerate(_decoded_items(signal, request, record.tenant)):
            position = start + i
            doc_id = document_id(record, position)
            own = shared.traces if traces else shared.logs
            items.append(BulkItem(own.index, doc_id, _source(doc, own), position))
            for k, event in enumerate(events):
                items.append(BulkItem(shared.logs.index, f"{doc_id}-e{k}", _source(event, shared.logs),
                                      position, event=k))
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
