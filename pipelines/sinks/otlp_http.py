"""OTLP/HTTP forwarding sink: the consumed OTLP bytes POSTed as protobuf to any OTLP/HTTP receiver
(another Collector, Tempo, VictoriaLogs, Prometheus' OTLP endpoint, Jaeger).

``telemetry-gateway pipelines --sink otlp_http`` with ``pipelines.otlp_http``: ``endpoint``
(``http://host:port``, to which ``/v1/traces``, ``/v1/logs``, ``/v1/metrics`` are appended) or a
signal's own URL in ``urls`` (VictoriaLogs: ``{logs: http://host:9428/insert/opentelemetry/v1/logs}``),
``signals``, ``headers`` (static, e.g. ``AccountID``/``ProjectID`` or an authorization),
``tenant_header`` (the record's tenant as the value of that header, e.g. ``X-Scope-OrgID``),
``compression`` (``gzip``, the default, or ``none``), ``timeout_s``.

The bytes are never decoded on the way (``pipelines.sinks.otlp_forward`` joins, splits and
isolates); ``pipelines.sinks.answers.classify_http`` reads the status (``Retry-After`` honoured
on 429/503). ``validate`` (default on): each record is decoded before it is sent, and only the
parts that decode are sent, because an OTLP/HTTP store may keep what it read of a request it
then refuses (VictoriaLogs does: it stores the log records before a malformed one and answers
400), so splitting such a request afterwards would store that part twice. A 2xx body is read
as the signal's Export response for its partial success.
"""

from __future__ import annotations

import gzip

import aiohttp
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from otlp.signals import Signal
from pipelines.sinks import backend_auth
from pipelines.sinks.answers import Answer, Verdict, classify_http
from pipelines.sinks.otlp_forward import OtlpForwardSink, Sent, parse_signals
from settings.config import Config, OtlpHttpSinkConfig, TlsClientConfig

# Fast: the sink's CPU goes to compression more than to anything else it does.
GZIP_LEVEL = 1


def _error_message(body: bytes, content_type: str) -> str:
    """What an OTLP/HTTP error answer says: a ``google.rpc.Status`` message, or the text."""
    if "protobuf" in content_type:
        try:
            return str(status_pb2.Status.FromString(body).message)[:500]
        except DecodeError:
            pass
    return body[:500].decode(errors="replace").strip()


class OtlpHttpSink(OtlpForwardSink):
    """Forwards OTLP bytes to an OTLP/HTTP receiver, protobuf encoded."""

    def __init__(self, endpoint: str = "", *, name: str = "otlp_http",
                 urls: dict[str, str] | None = None, signals: frozenset[Signal] = frozenset(Signal),
                 headers: dict[str, str] | None = None, tenant_header: str = "", compression: str = "gzip",
                 timeout_s: float = 10.0, concurrency: int = 4,
                 max_request_bytes: int = 3 * 1024 * 1024, validate: bool = True,
                 tls: TlsClientConfig | None = None, setting: str = "") -> None:
        base = endpoint.rstrip("/")
        self.urls = {s: (urls or {}).get(s.value) or f"{base}{s.spec.http_path}" for s in signals}
        for s, url in self.urls.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: no URL for {s.value} (endpoint {endpoint!r}, urls {urls!r})")
        super().__init__(name=name, signals=signals, target=endpoint or ", ".join(self.urls.values()),
                         tenant_header=tenant_header, concurrency=concurrency,
                         max_request_bytes=max_request_bytes, validate=validate)
        self.timeout_s = timeout_s
        self.gzip = compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": "telemetry-gateway",
                         **({"Content-Encoding": "gzip"} if self.gzip else {}), **(headers or {})}
        self._session: aiohttp.ClientSession | None = None
        self.tls = tls or TlsClientConfig()
        self.setting = setting or f"pipelines.{name}"

    async def start(self) -> None:
        https = any(url.startswith("https://") for url in self.urls.values())
        ssl_ctx = backend_auth.ssl_context(self.tls, self.setting) if https else None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                              connector=aiohttp.TCPConnector(ssl=ssl_ctx or True))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _export(self, signal: Signal, tenant: str, payload: bytes) -> Sent:
        assert self._session is not None, "start() first"
        headers = self._headers
        if self.tenant_header and tenant:
            headers = {**headers, self.tenant_header: tenant}
        body = gzip.compress(payload, GZIP_LEVEL) if self.gzip else payload
        try:
            async with self._session.post(self.urls[signal], data=body, headers=headers) as resp:
                raw = await resp.read()
                answer = classify_http(resp.status, resp.headers)
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Sent(Answer(Verdict.RETRY, f"{self.urls[signal]}: {exc!r}"), "error")
        if answer.verdict is not Verdict.DONE:
            message = _error_message(raw, ctype)
            if resp.status in (401, 403):
                message = backend_auth.refused(self.urls[signal], resp.status,
                                               f"{self.setting}.headers_from_file / headers_from_env")
            return Sent(Answer(answer.verdict, f"{resp.status}: {message}", answer.retry_after_s),
                        str(resp.status), message=message)
        if not raw or "protobuf" not in ctype:
            return Sent(answer, str(resp.status))
        try:
            reply = signal.spec.response.FromString(raw)
        except DecodeError:
            return Sent(answer, str(resp.status))
        rejected = int(getattr(reply.partial_success, signal.spec.rejected_field))
        return Sent(answer, str(resp.status), rejected, reply.partial_success.error_message)


def sink_from_config(c: OtlpHttpSinkConfig, name: str = "otlp_http") -> OtlpHttpSink:
    where = f"pipelines.{name}"
    return OtlpHttpSink(c.endpoint, name=name, urls=c.urls, signals=parse_signals(c.signals),
                        headers=backend_auth.configured_headers(where, c),
                        tenant_header=c.tenant_header, compression=c.compression,
                        timeout_s=c.timeout_s, concurrency=c.concurrency,
                        max_request_bytes=c.max_request_bytes, validate=c.validate, tls=c.tls, setting=where)


def make_sink(cfg: Config) -> OtlpHttpSink:
    """Entry point for ``telemetry-gateway pipelines --sink otlp_http``."""
    return sink_from_config(cfg.pipelines.otlp_http)
