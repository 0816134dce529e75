"""OTLP/HTTP receiver: ``POST /v1/{traces,logs,metrics}``, protobuf or JSON, any encoding in
``compression.DECODERS`` (identity, gzip, deflate/zlib, zstd, snappy).

Thin on purpose, and driven by two tables: the request's ``Content-Type`` picks an ``Encoding``
(``encodings``) once, which decodes the body for ``Ingest`` and writes every answer; its
``Content-Encoding`` picks a decoder (``compression``), bounded by the size and ratio caps. The
``Outcome`` is rendered as the OTLP/HTTP specification asks: an Export*ServiceResponse (with
``partial_success`` when items were rejected) in the request's encoding, or an error status with a
``google.rpc.Status`` body in that encoding.
"""

from __future__ import annotations

from gateway.ingest import Ingest, Outcome, Reason
from gateway.receivers import compression, encodings
from gateway.receivers.encodings import Encoding
from gateway.receivers.httpserver import Request, Response, Timeouts
from gateway.receivers.status import HTTP_STATUS, rpc_status
from otlp.signals import CORRELATION_HEADER, Signal
from settings.config import ServerConfig

TRANSPORT = "http"
_PATHS = {s.spec.http_path: s for s in Signal}


class OtlpHttp:
    """The request handler given to ``httpserver.serve``."""

    def __init__(self, ingest: Ingest, cfg: ServerConfig) -> None:
        self._ingest = ingest
        self._limits = compression.Limits(cfg.max_decompressed_bytes, cfg.max_decompression_ratio)
        self._max_body = cfg.max_request_bytes
        self.timeouts = Timeouts(cfg.read_header_timeout_s, cfg.read_timeout_s, cfg.idle_timeout_s,
                                 cfg.http.max_connection_age_s, cfg.http.max_requests_per_connection)

    async def __call__(self, req: Request) -> Response:
        signal = _PATHS.get(req.path)
        cid = self._ingest.correlation_id(req.headers)
        media = encodings.media_type(req.headers)
        encoding = encodings.for_media_type(media)
        answer_in = encoding or encodings.PROTOBUF
        if signal is None:
            return self._refuse(None, "not_found", f"no OTLP endpoint at {req.path}", cid, answer_in)
        if req.method != "POST":
            resp = self._refuse(signal, "method_not_allowed", f"{req.method} not allowed, use POST", cid,
                                answer_in)
            resp.headers.append(("Allow", "POST"))
            return resp
        if encoding is None:
            return self._refuse(signal, "unsupported_media_type",
                                f"Content-Type {media or '(none)'} is not {encodings.MEDIA_TYPES}", cid,
                                answer_in)
        name = req.headers.get("content-encoding", "").strip().lower()
        decoder = compression.DECODERS.get(name)
        if decoder is None:
            return self._refuse(signal, "unsupported_media_type",
                                f"Content-Encoding {name} is not one of {compression.NAMES}", cid, encoding)
        # Before decompressing and decoding: those cost more than the request an overloaded
        # gateway is about to refuse anyway.
        refused = self._ingest.admit(signal, TRANSPORT, cid)
        if refused is not None:
            return _render_refusal(refused, encoding)
        try:
            body = await compression.decode_async(decoder, req.body, self._limits)
        except compression.TooLarge as exc:
            return self._refuse(signal, "too_large", str(exc), cid, encoding)
        except compression.BadEncoding as exc:
            return self._refuse(signal, "malformed", str(exc), cid, encoding)
        outcome = await self._ingest.ingest(signal, TRANSPORT, req.headers, body, cid, encoding=encoding,
                                            client_names=req.client_names)
        if outcome.refused is not None:
            return _render_refusal(outcome, encoding)
        return Response(200, encoding.response(signal, outcome.rejected_items, outcome.message),
                        encoding.content_type, [(CORRELATION_HEADER, outcome.correlation_id)])

    def too_large(self, path: str, headers: dict[str, str]) -> Response:
        """Hook for bodies refused while still arriving (declared or actual size over the cap)."""
        signal = _PATHS.get(path)
        cid = self._ingest.correlation_id(headers)
        return self._refuse(signal, "too_large", f"request body exceeds {self._max_body} bytes", cid,
                            encodings.answering(headers))

    def _refuse(self, signal: Signal | None, reason: Reason, message: str, cid: str,
                encoding: Encoding) -> Response:
        return _render_refusal(self._ingest.refuse(signal, TRANSPORT, reason, message, cid), encoding)


def _render_refusal(outcome: Outcome, encoding: Encoding) -> Response:
    """Error status, google.rpc.Status body in the request's encoding, Retry-After if retryable."""
    assert outcome.refused is not None
    headers = [(CORRELATION_HEADER, outcome.correlation_id)]
    if outcome.retry_after_s is not None:
        headers.append(("Retry-After", str(max(1, round(outcome.retry_after_s)))))
    st = rpc_status(outcome.refused, outcome.message, outcome.retry_after_s)
    return Response(HTTP_STATUS[outcome.refused], encoding.status(st), encoding.content_type, headers)
