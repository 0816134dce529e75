"""Prometheus remote-write sink: OTLP metrics as remote-write 1.0 requests, one per tenant.

Each consumed batch is converted (``pipelines.convert.remote_write``) into one ``WriteRequest``
per tenant, split at ``max_series`` series, snappy block-compressed and POSTed with the
remote-write 1.0 headers and ``X-Scope-OrgID: <tenant>``, so a multi-tenant store (Mimir,
Cortex, Thanos receive) files it under the tenant; plain Prometheus ignores the header and
relies on the ``tenant`` label every series carries.

Answers, read by the shared classifier (``pipelines.sinks.answers``): 2xx is done; 429 and 5xx
are transient (the pipeline retries; a resent sample with the same timestamp and value is
accepted again without harm; ``Retry-After`` is honoured), and so are 401/403/404/405/408, which
say the endpoint or its credentials are wrong, not the data: dropping on them would turn a typo
in the URL into silent loss. Any other 4xx is a drop, counted in
``pipeline_remote_write_dropped_samples_total{reason}``: the classic case is a 400 for
out-of-order or duplicate samples, which no retry can fix. The same holds whatever the status
when the body names such a refusal: Prometheus 2.42 (the stack's) answers a sample older than
its out-of-order window with ``500 too old sample``, which retried would block the partition
forever. The answer does not say which samples of the request were kept, so all of the
request's samples are counted. Conversion drops (delta temporality, unsupported scale, an
exponential histogram point without a sum: ``missing_sum``) are counted under the same metric.

Exemplars the conversion drops are counted by reason in
``pipeline_remote_write_dropped_exemplars_total{reason}`` (``gauge``: the spec drops exemplars
of gauges and non-monotonic sums; ``same_millisecond``: the store keeps one per series and
timestamp), and attributes left off an exemplar to stay within its 128-character label limit in
``pipeline_remote_write_dropped_exemplar_labels_total``. Exemplars the store itself refuses
(older than the newest it holds for the series) are not reported back by remote write 1.0: the
request still succeeds.

A record that does not decode whole (a metric name that is not UTF-8 in one of the requests the
gateway batched into it) is converted part by part: its good series are written, and only the
bad part (the metric with its resource and scope, or a whole ResourceMetrics whose resource is
bad) is rejected to the dead-letter topic, as ``PermanentSinkError`` after the write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from bus.contract import BusRecord
from otlp.signals import TENANT_HEADER, Signal
from pipelines.convert.remote_write import Conversion, encode, split, to_write_requests
from pipelines.metrics import (
    REMOTE_WRITE_DROPPED_EXEMPLAR_LABELS,
    REMOTE_WRITE_DROPPED_EXEMPLARS,
    REMOTE_WRITE_DROPPED_SAMPLES,
    REMOTE_WRITE_REQUESTS,
    REMOTE_WRITE_SAMPLES,
)
from pipelines.sinks import backend_auth
from pipelines.sinks.answers import Throttle, Verdict, classify_http, count_credentials_refused
from pipelines.sinks.base import PermanentSinkError, TransientSinkError
from pipelines.sinks.parts import part_rejection
from protos import remote_pb2
from settings.config import Config, PrometheusSinkConfig

log = logging.getLogger(__name__)


HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "telemetry-gateway",
}


_SAMPLE_REFUSALS = (("out of order", "out_of_order"), ("out-of-order", "out_of_order"),
                    ("duplicate sample", "duplicate"), ("too old", "too_old"),
                    ("out of bounds", "out_of_bounds"))


def sample_refusal(text: str) -> str | None:
    """The reason if an answer's body says the samples themselves were refused, else None."""
    low = text.lower()
    for needle, reason in _SAMPLE_REFUSALS:
        if needle in low:
            return reason
    return None


def drop_reason(status: int, text: str) -> str:
    """A short, bounded label for why an answer dropped samples."""
    return sample_refusal(text) or f"http_{status}"


def _samples(req: remote_pb2.WriteRequest) -> int:
    return sum(len(ts.samples) + len(ts.histograms) for ts in req.timeseries)


class PrometheusSink:
    """Writes metrics to a remote-write endpoint (Prometheus, Mimir, Cortex, ...)."""

    name = "prometheus"
    signals = frozenset({Signal.METRICS})

    def __init__(self, cfg: PrometheusSinkConfig, *, max_series: int = 2000) -> None:
        self.cfg = cfg
        self.max_series = max_series
        self._session: aiohttp.ClientSession | None = None
        self._throttle = Throttle()
        self._headers: dict[str, str] = dict(HEADERS)
        self._credential = "pipelines.prometheus.username / bearer_token (none configured)"

    async def start(self) -> None:
        c, where = self.cfg, "pipelines.prometheus"
        extra = backend_auth.configured_headers(where, c)
        password = backend_auth.read_secret(f"{where}.password", file=c.password_file, env=c.password_env)
        token = backend_auth.read_secret(f"{where}.bearer_token", file=c.bearer_token_file,
                                         env=c.bearer_token_env)
        if c.username:
            extra["Authorization"] = aiohttp.encode_basic_auth(c.username, password or "")
            self._credential = (f"pipelines.prometheus.username {c.username!r} and the password from "
                                + backend_auth.source(f"{where}.password", file=c.password_file,
                                                      env=c.password_env))
        elif token is not None:
            extra["Authorization"] = f"Bearer {token}"
            self._credential = "the bearer token from " + backend_auth.source(
                f"{where}.bearer_token", file=c.bearer_token_file, env=c.bearer_token_env)
        self._headers = {**extra, **HEADERS}
        ssl_ctx = backend_auth.ssl_context(c.tls, where) if c.url.startswith("https://") else None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=c.timeout_s),
                                              connector=aiohttp.TCPConnector(ssl=ssl_ctx or True))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, tenant: str, req: remote_pb2.WriteRequest) -> None:
        assert self._session is not None, "start() first"
        n = _samples(req)
        await self._throttle.wait()
        try:
            async with self._session.post(self.cfg.url, data=encode(req),
                                          headers={**self._headers, TENANT_HEADER: tenant}) as resp:
                REMOTE_WRITE_REQUESTS.labels(str(resp.status)).inc()
                answer = classify_http(resp.status, resp.headers)
                if answer.verdict is Verdict.DONE:
                    REMOTE_WRITE_SAMPLES.inc(n)
                    return
                text = (await resp.text())[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            REMOTE_WRITE_REQUESTS.labels("error").inc()
            raise TransientSinkError(f"remote write to {self.cfg.url} failed: {exc!r}") from exc
        if count_credentials_refused(self.name, resp.status):
            raise TransientSinkError(backend_auth.refused(f"remote write to {self.cfg.url}", resp.status,
                                                          self._credential))
        if answer.verdict is Verdict.RETRY and sample_refusal(text) is None:
            self._throttle.note(answer)
            raise TransientSinkError(f"remote write {resp.status}: {text}",
                                     retry_after_s=answer.retry_after_s)
        reason = drop_reason(resp.status, text)
        REMOTE_WRITE_DROPPED_SAMPLES.labels(reason).inc(n)
        log.warning("remote write dropped %d sample(s) of tenant %s: %d %s", n, tenant, resp.status, text)

    async def _post_tenant(self, tenant: str, req: remote_pb2.WriteRequest) -> None:
        for part in split(req, self.max_series):  # in order: a series' samples stay time-ordered
            await self._post(tenant, part)

    async def write(self, records: Sequence[BusRecord]) -> None:
        """Write every series of ``records``; raise what the pipeline needs to settle the rest.

        Parts that do not decode are rejected alone (``PermanentSinkError``, each an Export
        request of just that part) after the record's other series were written; a store
        failure raises ``TransientSinkError`` and the whole batch is retried (remote write is
        idempotent for samples already stored).
        """
        await self.send(await self.prepare(records))

    async def prepare(self, records: Sequence[BusRecord]) -> _Prepared:
        """The conversion half of ``write`` (CPU only, no store): one WriteRequest per tenant.

        With ``send``, what a pipeline overlaps with the previous batch's write (the
        ``PreparingSink`` split of ``pipelines.sinks.base``)."""
        return _Prepared(records, to_write_requests((r.value, r.tenant) for r in records))

    async def send(self, prepared: _Prepared) -> None:
        """The store half of ``write``: post each tenant's request, count drops, raise as ``write``."""
        records, conv = prepared.records, prepared.conv
        await asyncio.gather(*(self._post_tenant(tenant, req) for tenant, req in conv.requests.items()
                               if req.timeseries))
        # Counted only once the batch went through, so a retried batch does not count twice.
        for reason, n in conv.dropped.items():
            REMOTE_WRITE_DROPPED_SAMPLES.labels(reason).inc(n)
        for reason, n in conv.dropped_exemplars.items():
            REMOTE_WRITE_DROPPED_EXEMPLARS.labels(reason).inc(n)
        if conv.dropped_exemplar_labels:
            REMOTE_WRITE_DROPPED_EXEMPLAR_LABELS.inc(conv.dropped_exemplar_labels)
        if conv.bad:
            # Only the parts that do not decode: the record's other series were just written.
            raise PermanentSinkError([part_rejection(records[i], part.value, part.reason)
                                      for i, part in conv.bad])


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch converted by ``PrometheusSink.prepare``: its records and their WriteRequests."""

    records: Sequence[BusRecord]
    conv: Conversion


def make_sink(cfg: Config) -> PrometheusSink:
    """Entry point for ``telemetry-gateway pipelines --sink prometheus``."""
    return PrometheusSink(cfg.pipelines.prometheus)
