"""OTLP/gRPC forwarding sink: the consumed OTLP bytes go to any OTLP/gRPC receiver untouched.

``telemetry-gateway pipelines --sink otlp_grpc`` with ``pipelines.otlp_grpc.endpoint``
(``host:port``), ``signals``, ``headers`` (sent as metadata), ``tenant_header`` (the record's
tenant as the value of that metadata key, e.g. ``x-scope-orgid``), ``compression``
(``none``/``gzip``), ``timeout_s`` (per export; 0: no deadline); ``tls`` (CA, client
certificate) and ``headers_from_file`` / ``headers_from_env`` for secret metadata such as an API
key. Each signal's ``<Service>/Export`` is called with an identity serializer: the bytes are
never decoded on the way (``pipelines.sinks.otlp_forward`` joins, splits and isolates;
``pipelines.sinks.answers.classify_grpc`` reads the status, with ``RetryInfo`` honoured).
``--sink jaeger`` is this sink with Jaeger's receiver as the endpoint.
"""

from __future__ import annotations

import grpc

from otlp.signals import Signal
from pipelines.sinks import backend_auth
from pipelines.sinks.answers import Answer, Verdict, classify_grpc
from pipelines.sinks.otlp_forward import OtlpForwardSink, Sent, parse_signals
from settings.config import Config, OtlpGrpcSinkConfig, TlsClientConfig

_REFUSED_CREDENTIALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _identity(b: bytes) -> bytes:
    return b


class OtlpGrpcSink(OtlpForwardSink):
    """Forwards OTLP bytes to an OTLP/gRPC receiver."""

    def __init__(self, endpoint: str, *, name: str = "otlp_grpc",
                 signals: frozenset[Signal] = frozenset(Signal), headers: dict[str, str] | None = None,
                 tenant_header: str = "", compression: str = "none", timeout_s: float = 10.0,
                 concurrency: int = 4, max_request_bytes: int = 3 * 1024 * 1024,
                 tls: TlsClientConfig | None = None, setting: str = "") -> None:
        super().__init__(name=name, signals=signals, target=endpoint, tenant_header=tenant_header.lower(),
                         concurrency=concurrency, max_request_bytes=max_request_bytes)
        self.endpoint = endpoint
        self.tls = tls or TlsClientConfig()
        self.setting = setting or f"pipelines.{name}"  # named in messages about TLS and credentials
        self.timeout_s = timeout_s
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self._channel: grpc.aio.Channel | None = None
        self._exports: dict[Signal, grpc.aio.UnaryUnaryMultiCallable] = {}

    async def start(self) -> None:
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 0)]
        target = backend_auth.grpc_target(self.endpoint)
        if backend_auth.grpc_wants_tls(self.endpoint, self.tls):
            creds = backend_auth.grpc_credentials(self.tls, self.setting)
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._exports = {s: self._channel.unary_unary(s.spec.grpc_path, request_serializer=_identity,
                                                      response_deserializer=_identity)
                         for s in self.signals}

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._exports = {}

    async def _export(self, signal: Signal, tenant: str, payload: bytes) -> Sent:
        export = self._exports.get(signal)
        assert export is not None, "start() first"
        metadata = self._metadata + (((self.tenant_header, tenant),) if self.tenant_header and tenant else ())
        try:
            # 0: no deadline, as the Collector's exporterhelper and the aiohttp sinks read it (grpc
            # would take timeout=0 as a deadline already passed).
            raw = await export(payload, timeout=self.timeout_s or None, metadata=metadata or None,
                               compression=self._compression)
        except grpc.aio.AioRpcError as exc:
            trailing = exc.trailing_metadata()
            answer = classify_grpc(exc.code(), exc.details(), list(trailing) if trailing else None)
            # A refusal is named as OTLP names it, also when grpc-go answered INTERNAL because
            # the bytes did not unmarshal; the metric keeps the real code.
            refusal = grpc.StatusCode.INVALID_ARGUMENT.name if answer.reject else ""
            if exc.code() in _REFUSED_CREDENTIALS:
                what = f"{self.setting}.headers_from_file / headers_from_env / tls"
                answer = Answer(answer.verdict, backend_auth.refused(self.endpoint, exc.code().name, what),
                                answer.retry_after_s)
            return Sent(answer, exc.code().name, refusal=refusal)
        resp = signal.spec.response.FromString(raw)
        rejected = int(getattr(resp.partial_success, signal.spec.rejected_field))
        return Sent(Answer(Verdict.DONE), "OK", rejected, resp.partial_success.error_message)


def sink_from_config(c: OtlpGrpcSinkConfig, name: str = "otlp_grpc") -> OtlpGrpcSink:
    where = f"pipelines.{name}"
    return OtlpGrpcSink(c.endpoint, name=name, signals=parse_signals(c.signals),
                        headers=backend_auth.configured_headers(where, c),
                        tenant_header=c.tenant_header, compression=c.compression, timeout_s=c.timeout_s,
                        concurrency=c.concurrency, max_request_bytes=c.max_request_bytes, tls=c.tls,
                        setting=where)


def make_sink(cfg: Config) -> OtlpGrpcSink:
    """Entry point for ``telemetry-gateway pipelines --sink otlp_grpc``."""
    return sink_from_config(cfg.pipelines.otlp_grpc)
