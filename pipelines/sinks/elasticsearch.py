"""Elasticsearch sink: spans and logs as OTel-native documents, bulk-written idempotently.

Where documents go: data streams ``traces-otel-<tenant>`` and ``logs-otel-<tenant>`` (the
``type-dataset-namespace`` scheme with the tenant, lower-cased and sanitised, as namespace; see
``pipelines.convert.es_docs``). At start the sink installs one composable index template per
signal (``traces-otel-*``, ``logs-otel-*``, declaring ``data_stream``; PUT is idempotent), and
the first write to a tenant's name creates its data stream. Every document is written with the
``create`` action and an ``_id`` from its Kafka coordinates, so a redelivered document answers
409, which counts as written: redelivery never duplicates.

Verified against the integ-test distribution 9.5 that ``stack/`` runs (modules: transport,
x-pack core/security, apm). It lacks the data-streams *module*, i.e. the ``_data_stream`` REST
API (``GET _data_stream`` answers 400, the path taken for an index name), but data streams
themselves live in the server: a template with ``data_stream`` is accepted, writes auto-create
the stream with ``.ds-`` backing indices, and ``_resolve/index`` lists it. So data streams are
used; if a node refuses a data-stream template, plain indices of the same names are used
instead (same ``create`` semantics). ``flattened`` is in the server and holds every attribute
map: ``passthrough`` (typed fields per key) was dropped because a key that is a string in one
document and a map in another is a mapping conflict that refuses the document, and every new
key is a new field against ``index.mapping.total_fields.limit``. ``match_only_text``
(mapper-extras module) is refused, so ``body.text`` is ``text``.

Errors. Only a 400 (the document does not parse or fit the mapping) rejects for good
(``PermanentSinkError`` -> dead letters), and only that document's item (its span or log
record, with resource and scope), as do parts of a record that do not decode. The mapping
leaves little to refuse: ``ignore_above`` on every keyword and flattened leaf (Lucene's
32766-byte term limit), ``flattened`` attributes, ``ignore_malformed``; what remains is, for
one, an attribute key over 32766 bytes. Everything else is about
the store, not the data, and raises ``TransientSinkError``: 429 and 5xx, connection failures,
and also 403 (a write block, e.g. the disk flood stage) and 404 (auto-create disabled), which
an operator fixes while the data waits in Kafka. The transient error names the records fully
written or rejected, so the pipeline's retry sends only the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as TallyCounter
from collections.abc import Sequence
from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.convert.es_docs import (
    LOGS_PREFIX,
    TRACES_PREFIX,
    BulkItem,
    bulk_body,
    item_part,
    record_documents,
)
from pipelines.metrics import ES_DOCUMENTS
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from pipelines.sinks.parts import part_rejection
from settings.config import Config, ElasticsearchSinkConfig

log = logging.getLogger(__name__)


# The data's fault: retrying cannot help. 413: larger than the node's http.max_content_length.
PERMANENT_STATUS = frozenset({400, 413})

# Lucene refuses a term over 32766 bytes, and a refused term refuses the whole document. Every
# keyword (and every leaf of a flattened field) longer than this many characters is kept in
# _source but not indexed: 8191 characters are at most 32764 UTF-8 bytes. Flattened leaves are
# indexed a second time as "<key>\0<value>", so theirs is lower, leaving room for the key.
KEYWORD_IGNORE_ABOVE = 8191
FLATTENED_IGNORE_ABOVE = 4096
# AnyValue nesting the edge lets through is 16 arrays/kvlists; a flattened field counts only
# object levels (arrays do not add one), so 16 nested kvlists under an attribute are 17.
FLATTENED_DEPTH_LIMIT = 32

_KEYWORD = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
_DATE = {"type": "date_nanos"}
# Attribute maps of any shape: one field each, whatever the keys (no mapping explosion against
# index.mapping.total_fields.limit), and no mapping conflicts when a key holds a string in one
# document and a number or a map in another (every leaf is a keyword).
_ATTRIBUTES = {"type": "flattened", "ignore_above": FLATTENED_IGNORE_ABOVE,
               "depth_limit": FLATTENED_DEPTH_LIMIT}
_COUNT = {"type": "long"}


def _common_mappings() -> dict[str, Any]:
    return {
        "@timestamp": _DATE,
        "data_stream": {"properties": {"type": _KEYWORD, "dataset": _KEYWORD, "namespace": _KEYWORD}},
        "trace_id": _KEYWORD,
        "span_id": _KEYWORD,
        "attributes": _ATTRIBUTES,
        "dropped_attributes_count": _COUNT,
        "resource": {"properties": {
            "attributes": _ATTRIBUTES, "dropped_attributes_count": _COUNT, "schema_url": _KEYWORD,
        }},
        "scope": {"properties": {
            "name": _KEYWORD, "version": _KEYWORD, "attributes": _ATTRIBUTES,
            "dropped_attributes_count": _COUNT, "schema_url": _KEYWORD,
        }},
    }


def index_template(signal: Signal, data_streams: bool) -> dict[str, Any]:
    """The composable template body for one signal's ``<prefix>*`` family.

    No attribute value of any size or type gets a document refused: keywords have
    ``ignore_above``, attribute maps are ``flattened`` (see ``_ATTRIBUTES``), strings of other
    dynamic fields become keywords with ``ignore_above``, and ``ignore_malformed`` covers
    numbers and dates that do not parse.
    """
    props = _common_mappings()
    if signal is Signal.TRACES:
        props.update({
            "parent_span_id": _KEYWORD,
            "trace_state": _KEYWORD,
            "name": _KEYWORD,
            "kind": _KEYWORD,
            "duration": _COUNT,
            "status": {"properties": {"code": _KEYWORD, "message": {"type": "text"}}},
            "dropped_events_count": _COUNT,
            "dropped_links_count": _COUNT,
            "events": {"properties": {"name": _KEYWORD, "timestamp": _DATE, "attributes": _ATTRIBUTES,
                                      "dropped_attributes_count": _COUNT}},
            "links": {"properties": {"trace_id": _KEYWORD, "span_id": _KEYWORD, "trace_state": _KEYWORD,
                                     "attributes": _ATTRIBUTES, "dropped_attributes_count": _COUNT}},
        })
    else:
        props.update({
            "observed_timestamp": _DATE,
            "severity_text": _KEYWORD,
            "severity_number": {"type": "byte"},
            "event_name": _KEYWORD,
            "body": {"properties": {"text": {"type": "text"}, "structured": _ATTRIBUTES}},
        })
    template: dict[str, Any] = {
        "index_patterns": [(TRACES_PREFIX if signal is Signal.TRACES else LOGS_PREFIX) + "*"],
        # Above the built-in traces-*-* / logs-*-* templates (priority 100) where those exist.
        "priority": 250,
        "template": {
            "settings": {
                "index.number_of_shards": 1,
                "index.auto_expand_replicas": "0-1",
                "index.mapping.ignore_malformed": True,
                "index.mapping.total_fields.limit": 2000,
                "index.mapping.total_fields.ignore_dynamic_beyond_limit": True,
            },
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keyword": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                ],
                "properties": props,
            },
        },
        "_meta": {"managed_by": "telemetry-gateway"},
    }
    if data_streams:
        template["data_stream"] = {}
    return template


class ElasticsearchSink:
    """Bulk-indexes spans and logs; idempotent by ``_id`` derived from Kafka coordinates."""

    name = "elasticsearch"
    signals = frozenset({Signal.TRACES, Signal.LOGS})

    def __init__(self, cfg: ElasticsearchSinkConfig, client: AsyncElasticsearch | None = None) -> None:
        self.cfg = cfg
        self._client = client
        self._ready = False
        # What the node accepts, settled by _install_templates.
        self.data_streams = True
        self._sem = asyncio.Semaphore(max(cfg.concurrency, 1))

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            hosts = [h.strip() for h in self.cfg.hosts.split(",") if h.strip()]
            self._client = AsyncElasticsearch(hosts, request_timeout=30, max_retries=0,
                                              retry_on_timeout=False)
        return self._client

    async def start(self) -> None:
        """Install the templates; if Elasticsearch is not up yet, the first write does it."""
        try:
            await self._ensure_ready()
        except TransientSinkError as exc:
            log.warning("elasticsearch not ready at start (%s); templates go in on first write", exc)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        try:
            for signal in (Signal.TRACES, Signal.LOGS):
                await self._put_template(signal)
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise TransientSinkError(f"elasticsearch unreachable: {exc}") from exc
        except ApiError as exc:
            raise TransientSinkError(f"installing index templates failed: {exc}") from exc
        self._ready = True
        log.info("elasticsearch: templates installed (data streams: %s)", self.data_streams)

    async def _put_template(self, signal: Signal) -> None:
        """PUT the template, stepping down to plain indices on a 400 about data streams."""
        while True:
            try:
                await self.client.indices.put_index_template(
                    name=f"{signal.value}-otel-telemetry-gateway",
                    **index_template(signal, self.data_streams))
                return
            except ApiError as exc:
                if exc.meta.status != 400:
                    raise
                msg = str(exc).lower()
                if self.data_streams and "data stream" in msg.replace("_", " "):
                    log.warning("elasticsearch refused a data-stream template (%s); using indices", exc)
                    self.data_streams = False
                else:
                    raise

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Write every document of ``records``; raise what the pipeline needs to settle the rest.

        Parts that do not decode, and documents Elasticsearch refuses for good (400/413), are
        rejected alone: the ``Rejection`` holds a copy of the record whose value is just that
        part (an Export request of its own), and the record's other documents are written. A
        record that is not a protobuf at all is rejected whole. Raises ``PermanentSinkError``
        with the rejections, or ``TransientSinkError`` naming the records fully settled.
        """
        await self._ensure_ready()
        owners: list[int] = []  # item -> index of its record in ``records``
        items: list[BulkItem] = []
        rejected: dict[int, list[Rejection]] = {}
        for i, rec in enumerate(records):
            converted = record_documents(rec)
            for bad in converted.bad:
                rejected.setdefault(i, []).append(part_rejection(rec, bad.value, bad.reason))
            items.extend(converted.items)
            owners.extend([i] * len(converted.items))
            # A full batch is seconds of CPU: let the consumer's heartbeats run in between.
            await asyncio.sleep(0)

        transient: set[int] = set()
        outcomes: TallyCounter[tuple[str, str]] = TallyCounter()
        chunks = self._chunks(items)
        results = await asyncio.gather(*(self._send(items[a:b]) for a, b in chunks))
        for (a, _), statuses in zip(chunks, results, strict=True):
            for j, (status, reason) in enumerate(statuses):
                idx = owners[a + j]
                rec = records[idx]
                signal = rec.signal.value
                if status < 300 or status == 409:  # 409: this _id is already there
                    outcomes[signal, "written"] += 1
                elif status in PERMANENT_STATUS:
                    outcomes[signal, "rejected"] += 1
                    rejected.setdefault(idx, []).append(part_rejection(
                        rec, item_part(rec, items[a + j]), f"elasticsearch {status}: {reason}"))
                else:
                    outcomes[signal, "retried"] += 1
                    transient.add(idx)
        for (signal, outcome), n in outcomes.items():
            ES_DOCUMENTS.labels(signal, outcome).inc(n)

        if transient:
            # A record with a document to retry is not settled, and its rejections are found
            # again on the retry; the others are written, with their rejected parts.
            settled = [i for i in range(len(records)) if i not in transient]
            written = [records[i] for i in settled
                       if not any(r.record is records[i] for r in rejected.get(i, ()))]
            raise TransientSinkError(f"elasticsearch: {len(transient)} record(s) hit 429/5xx; retrying",
                                     written=written,
                                     rejected=[r for i in settled for r in rejected.get(i, ())])
        if rejected:
            raise PermanentSinkError([r for rs in rejected.values() for r in rs])

    def _chunks(self, items: Sequence[BulkItem]) -> list[tuple[int, int]]:
        """[start, end) ranges of at most ``bulk_max_docs`` items and about ``bulk_max_bytes``."""
        max_docs, max_bytes = self.cfg.bulk_max_docs, self.cfg.bulk_max_bytes
        out: list[tuple[int, int]] = []
        start, size = 0, 0
        for i, it in enumerate(items):
            item_bytes = len(it.source) + len(it.index) + len(it.doc_id) + 40  # + the action line
            if i > start and (i - start >= max_docs or size + item_bytes > max_bytes):
                out.append((start, i))
                start, size = i, 0
            size += item_bytes
        if start < len(items):
            out.append((start, len(items)))
        return out

    async def _send(self, items: list[BulkItem]) -> list[tuple[int, str]]:
        """Bulk one chunk; (status, reason) per item. A failed request fails every item in it."""
        async with self._sem:
            try:
                resp = await self.client.bulk(
                    operations=bulk_body(items, "create"),  # type: ignore[arg-type]  # NDJSON bytes pass as-is
                    filter_path="errors,items.*.status,items.*.error.type,items.*.error.reason",
                )
            except (EsConnectionError, ConnectionTimeout) as exc:
                raise TransientSinkError(f"elasticsearch unreachable: {exc}") from exc
            except ApiError as exc:
                status = exc.meta.status
                if status not in PERMANENT_STATUS:
                    raise TransientSinkError(f"elasticsearch bulk {status}: {exc}") from exc
                return [(status, str(exc))] * len(items)
        body = resp.body
        if not body.get("errors"):
            return [(200, "")] * len(items)
        out = []
        for entry in body["items"]:
            result = next(iter(entry.values()))
            err = result.get("error") or {}
            out.append((int(result.get("status", 500)), f"{err.get('type', '')}: {err.get('reason', '')}"))
        return out


def make_sink(cfg: Config) -> ElasticsearchSink:
    """Entry point for ``telemetry-gateway pipelines --sink elasticsearch``."""
    return ElasticsearchSink(cfg.pipelines.elasticsearch)
