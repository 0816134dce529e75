"""Elasticsearch sink: spans and logs as OTel-native documents, bulk-written idempotently.

Where documents go: data streams ``traces-generic.otel-<ns>`` and ``logs-generic.otel-<ns>``
(Elastic's ``<type>-<dataset>.otel-<namespace>`` OTel scheme, the tenant mapped one to one as
namespace; see ``pipelines.convert.es_docs``); span events also go to the logs stream as log
documents. At start the sink installs one composable index template per signal
(``traces-generic.otel-*``, ``logs-generic.otel-*``, declaring ``data_stream``; PUT is
idempotent) at a priority below Elastic's own OTel templates, so on an Elastic deployment
theirs map the documents and ours serve where they are absent (``es_templates``). The first
write to a tenant's name creates its data stream. Every document is written with the
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

The templates (``pipelines.convert.es_templates``) sit beside the documents they map.

``write`` is three steps: ``_build`` converts records to bulk items (parts that do not decode
are rejected there), ``_send`` bulks them in chunks, ``_tally`` reads each item's status through
the shared HTTP classifier (``pipelines.sinks.answers``; 409 on ``create`` counts as written).
Elasticsearch answers only what ``_tally`` reads (``BULK_FILTER_PATH``), and an answer without
errors is not parsed past its first member (``AnswerSerializer``): the full answer to 5,000
documents is about 1.1 MB of JSON, the filtered one 130 kB, and it is read in one comparison.
A document refused for good (400: it does not parse or fit the mapping; 413) is rejected
alone, its item (span or log record, with resource and scope) as the dead-lettered part. The
mapping leaves little to refuse: ``ignore_above`` on every keyword and flattened leaf,
``flattened`` attributes, ``ignore_malformed``; what remains is, for one, an attribute key over
32766 bytes. Everything else is about the store, not the data, and raises
``TransientSinkError``: 429 and 5xx, connection failures, and also 403 (a write block, e.g. the
disk flood stage) and 404 (auto-create disabled), which an operator fixes while the data waits
in Kafka. The transient error names the records fully written or rejected, so the pipeline's
retry sends only the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as TallyCounter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer

from bus.contract import BusRecord
from otlp.signals import Signal
from pipelines.convert.es_docs import INDEX_PREFIX, BulkItem, bulk_body, item_part, record_documents
from pipelines.convert.es_templates import index_template
from pipelines.metrics import ES_DOCUMENTS
from pipelines.sinks import backend_auth
from pipelines.sinks.answers import Answer, Throttle, Verdict, classify_http, count_credentials_refused
from pipelines.sinks.base import PermanentSinkError, Rejection, TransientSinkError
from pipelines.sinks.parts import part_rejection, refuses_whole
from settings.config import Config, ElasticsearchSinkConfig

log = logging.getLogger(__name__)

__all__ = ["ElasticsearchSink", "index_template", "make_sink", "template_name"]

# On ``create``, 409 says the ``_id`` is already there: written by an earlier delivery.
_ALREADY_THERE = (409,)

# What the sink reads of a bulk answer (as go-docappender asks): whether anything failed, and per
# item its status and error. ``items.*.status`` is in every item, so the filtered ``items`` keep
# one entry per request item, in order (an item with no field left would drop out of the list).
BULK_FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"
_NO_ERRORS = b'{"errors":false'


class AnswerSerializer(OrjsonSerializer):
    """Elasticsearch's JSON answers parsed with orjson (about 2x the standard library's ``json``
    on bulk answers), and a filtered bulk answer without errors not parsed at all.

    With ``BULK_FILTER_PATH`` a bulk answer is ``{"errors":false,"items":[...]}``: when it
    starts so, ``{"errors": False}`` is all the sink reads of it, and the 5,000-odd
    ``{"create":{"status":201}}`` entries after it (about 6 ms of ``json`` per 5,000) are
    skipped. No other answer starts so (an unfiltered bulk answer starts with ``took``).
    """

    def loads(self, data: bytes) -> Any:
        if data.startswith(_NO_ERRORS):
            return {"errors": False}
        return super().loads(data)


def template_name(signal: Signal) -> str:
    """``traces-generic.otel-telemetry-gateway`` / ``logs-generic.otel-telemetry-gateway``.

    A new name for the new streams: the templates of the earlier ``traces-otel-*`` /
    ``logs-otel-*`` streams (``<signal>-otel-telemetry-gateway``) are left in place so those
    streams keep rolling over until their data ages out.
    """
    return f"{INDEX_PREFIX[signal]}telemetry-gateway"


@dataclass
class _Batch:
    """One ``write``: the records, their bulk items (``owners[i]``: the record of item ``i``),
    and the rejections found so far, per record index."""

    records: Sequence[BusRecord]
    items: list[BulkItem] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    rejected: dict[int, list[Rejection]] = field(default_factory=dict)

    def reject(self, idx: int, rejection: Rejection) -> None:
        self.rejected.setdefault(idx, []).append(rejection)


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
        self._throttle = Throttle()
        self.credential = "pipelines.elasticsearch.username / api_key (none configured)"

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            hosts = [h.strip() for h in self.cfg.hosts.split(",") if h.strip()]
            self._client = AsyncElasticsearch(hosts, request_timeout=30, max_retries=0,
                                              retry_on_timeout=False,
                                              serializers={"application/json": AnswerSerializer()},
                                              **self._security(hosts))
        return self._client

    def _security(self, hosts: list[str]) -> dict[str, Any]:
        """TLS and credentials (``pipelines.elasticsearch.*``), secrets read from their files / variables."""
        c, where = self.cfg, "pipelines.elasticsearch"
        out: dict[str, Any] = {}
        if any(h.startswith("https://") for h in hosts):
            if c.ca_fingerprint:
                out["ssl_assert_fingerprint"] = c.ca_fingerprint.replace(":", "").lower()
                out["verify_certs"] = False  # the pinned fingerprint is the check
            else:
                out["ssl_context"] = backend_auth.ssl_context(c.tls, where)
        api_key = backend_auth.read_secret(f"{where}.api_key", file=c.api_key_file, env=c.api_key_env)
        if api_key is not None:
            out["api_key"] = api_key
            self.credential = "the API key from " + backend_auth.source(
                f"{where}.api_key", file=c.api_key_file, env=c.api_key_env)
        elif c.username:
            password = backend_auth.read_secret(f"{where}.password", file=c.password_file, env=c.password_env)
            out["basic_auth"] = (c.username, password or "")
            self.credential = (f"{where}.username {c.username!r} and the password from "
                               + backend_auth.source(f"{where}.password", file=c.password_file,
                                                     env=c.password_env))
        return out

    def _refused(self, status: int) -> str:
        return backend_auth.refused(f"elasticsearch {self.cfg.hosts}", status, self.credential)

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
            if count_credentials_refused(self.name, exc.meta.status):
                raise TransientSinkError(self._refused(exc.meta.status)) from exc
            raise TransientSinkError(f"installing index templates failed: {exc}") from exc
        self._ready = True
        log.info("elasticsearch: templates installed (data streams: %s)", self.data_streams)

    async def _put_template(self, signal: Signal) -> None:
        """PUT the template, stepping down to plain indices on a 400 about data streams."""
        while True:
            try:
                await self.client.indices.put_index_template(
                    name=template_name(signal),
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

        Parts that do not decode, and documents Elasticsearch refuses for good, are rejected
        alone (``Rejection.part``: an Export request of just that part), and the record's other
        documents are written. A record that is not a protobuf at all is rejected whole. Raises
        ``PermanentSinkError`` with the rejections, or ``TransientSinkError`` naming the records
        fully settled.
        """
        await self.send(await self.prepare(records))

    async def prepare(self, records: Sequence[BusRecord]) -> _Batch:
        """The conversion half of ``write`` (CPU only, no store): every record's bulk items, and
        a rejection per part that does not decode. With ``send``, what a pipeline overlaps
        with the previous batch's write (the ``PreparingSink`` split)."""
        return await self._build(records)

    async def send(self, batch: _Batch) -> None:
        """The store half of ``write``: bulk ``batch`` and settle it, raising as ``write`` does."""
        await self._ensure_ready()
        await self._throttle.wait()
        chunks = self._chunks(batch.items)
        results = await asyncio.gather(*(self._send(batch.items[a:b]) for a, b in chunks))
        self._tally(batch, [(a, answers) for (a, _), answers in zip(chunks, results, strict=True)])

    async def _build(self, records: Sequence[BusRecord]) -> _Batch:
        """Convert: every record's bulk items, and a rejection per part that does not decode."""
        batch = _Batch(records)
        for i, rec in enumerate(records):
            converted = record_documents(rec)
            for bad in converted.bad:
                batch.reject(i, part_rejection(rec, bad.value, bad.reason))
            batch.items.extend(converted.items)
            batch.owners.extend([i] * len(converted.items))
            # A full batch is seconds of CPU: let the consumer's heartbeats run in between.
            await asyncio.sleep(0)
        return batch

    def _tally(self, batch: _Batch, results: list[tuple[int, list[Answer]]]) -> None:
        """Settle the batch from each item's answer: count, reject, or raise for a retry."""
        records = batch.records
        transient: set[int] = set()
        wait: float | None = None
        outcomes: TallyCounter[tuple[str, str]] = TallyCounter()
        # A span and its events' log documents share one part: dead-letter it once.
        parts_rejected: set[tuple[int, int]] = set()
        for start, answers in results:
            for j, answer in enumerate(answers):
                idx = batch.owners[start + j]
                rec = records[idx]
                item = batch.items[start + j]
                # Counted by the stream the document went to: a span event's is a log document.
                signal = Signal.LOGS.value if item.event >= 0 else rec.signal.value
                if answer.verdict is Verdict.DONE:
                    outcomes[signal, "written"] += 1
                elif answer.verdict is Verdict.REJECT:
                    outcomes[signal, "rejected"] += 1
                    if (idx, item.position) not in parts_rejected:
                        parts_rejected.add((idx, item.position))
                        what = f"span event {item.event}: " if item.event >= 0 else ""
                        batch.reject(idx, part_rejection(rec, item_part(rec, item),
                                                         f"elasticsearch {what}{answer.detail}"))
                else:
                    outcomes[signal, "retried"] += 1
                    transient.add(idx)
                    self._throttle.note(answer)
                    if answer.retry_after_s:
                        wait = max(wait or 0.0, answer.retry_after_s)
        for (signal, outcome), n in outcomes.items():
            ES_DOCUMENTS.labels(signal, outcome).inc(n)

        rejected = batch.rejected
        if transient:
            # A record with a document to retry is not settled, and its rejections are found
            # again on the retry; the others are written, with their rejected parts.
            settled = [i for i in range(len(records)) if i not in transient]
            written = [records[i] for i in settled if not refuses_whole(rejected.get(i, []), records[i])]
            raise TransientSinkError(f"elasticsearch: {len(transient)} record(s) hit 429/5xx; retrying",
                                     written=written,
                                     rejected=[r for i in settled for r in rejected.get(i, ())],
                                     retry_after_s=wait)
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

    async def _send(self, items: list[BulkItem]) -> list[Answer]:
        """Bulk one chunk; the answer per item. A refused request answers for every item in it."""
        async with self._sem:
            try:
                resp = await self.client.bulk(
                    operations=bulk_body(items, "create"),  # type: ignore[arg-type]  # NDJSON bytes pass as-is
                    filter_path=BULK_FILTER_PATH,
                )
            except (EsConnectionError, ConnectionTimeout) as exc:
                raise TransientSinkError(f"elasticsearch unreachable: {exc}") from exc
            except ApiError as exc:
                status = exc.meta.status
                answer = classify_http(status, exc.meta.headers, f"{status}: {exc}")
                if count_credentials_refused(self.name, status):
                    raise TransientSinkError(self._refused(status)) from exc
                if answer.verdict is Verdict.RETRY:
                    self._throttle.note(answer)
                    raise TransientSinkError(f"elasticsearch bulk {status}: {exc}",
                                             retry_after_s=answer.retry_after_s) from exc
                return [answer] * len(items)
        body = resp.body
        if not body.get("errors"):
            return [Answer(Verdict.DONE)] * len(items)
        out, statuses = item_answers(body)
        for status in statuses:  # per bulk request, not per document (each is retried alike)
            count_credentials_refused(self.name, status)
        return out


def item_answers(body: Mapping[str, Any]) -> tuple[list[Answer], set[int]]:
    """The answer per item of a ``_bulk`` response body with ``errors: true`` (``items``: one
    ``{action: {status, error: {type, reason}}}`` each, in request order), and the set of the
    items' HTTP statuses (a per-item 401 / 403 is a credential or privilege refusal on that
    index, e.g. ``security_exception`` for a new tenant's data stream)."""
    out = []
    statuses: set[int] = set()
    for entry in body["items"]:
        result = next(iter(entry.values()))
        err = result.get("error") or {}
        status = int(result.get("status", 500))
        statuses.add(status)
        reason = f"{status}: {err.get('type', '')}: {err.get('reason', '')}"
        out.append(classify_http(status, None, reason, done=_ALREADY_THERE))
    return out, statuses


def make_sink(cfg: Config) -> ElasticsearchSink:
    """Entry point for ``telemetry-gateway pipelines --sink elasticsearch``."""
    return ElasticsearchSink(cfg.pipelines.elasticsearch)
