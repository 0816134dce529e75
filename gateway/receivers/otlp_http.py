"""OTLP/HTTP receiver: ``POST /v1/{traces,logs,metrics}``, protobuf or JSON, gzip or identity.

Thin on purpose: it turns the HTTP request into protobuf bytes (inflating and converting JSON),
hands them to ``Ingest`` and renders the ``Outcome`` as the OTLP/HTTP specification asks:
an Export*ServiceResponse (with ``partial_success`` when items were rejected) in the request's
encoding, or an error status with a ``google.rpc.Status`` body in that encoding.
"""

from __future__ import annotations

from google.protobuf import json_format

from gateway.ingest import Ingest, Outcome, Reason
from gateway.receivers.gunzip import BadGzip, TooLarge, gunzip_async
from gateway.receivers.httpserver import Request, Response, Timeouts
from gateway.receivers.status import HTTP_STATUS, export_response, rpc_status
from otlp import json_mapping
from otlp.signals import CORRELATION_HEADER, Signal
from settings.config import ServerConfig

TRANSPORT = "http"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PATHS = {s.spec.http_path: s for s in Signal}


class OtlpHttp:
    """The request handler given to ``httpserver.serve``."""

    def __init__(self, ingest: Ingest, cfg: ServerConfig) -> None:
        self._ingest = ingest
        self._max_inflated = cfg.max_decompressed_bytes
        self._max_body = cfg.max_request_bytes
        self._max_ratio = cfg.max_decompression_ratio
        self.timeouts = Timeouts(cfg.read_header_timeout_s, cfg.read_timeout_s, cfg.idle_timeout_s)

    async def __call__(self, req: Request) -> Response:
        signal = _PATHS.get(req.path)
        cid = self._ingest.correlation_id(req.headers)
        media = _media_type(req.headers)
        as_json = media == JSON
        if signal is None:
            return self._refuse(None, "not_found", f"no OTLP endpoint at {req.path}", cid, as_json)
        if req.method != "POST":
            resp = self._refuse(signal, "method_not_allowed", f"{req.method} not allowed, use POST", cid,
                                as_json)
            resp.headers.append(("Allow", "POST"))
            return resp
        if media not in (PROTOBUF, JSON):
            return self._refuse(signal, "unsupported_media_type",
                                f"Content-Type {media or '(none)'} is not {PROTOBUF} or {JSON}", cid, False)
        # Before inflating and converting: those cost more than the request an overloaded
        # gateway is about to refuse anyway.
        refused = self._ingest.admit(signal, TRANSPORT, cid)
        if refused is not None:
            return _render_refusal(refused, as_json)
        body = req.body
        encoding = req.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                body = await gunzip_async(body, self._max_inflated, max_ratio=self._max_ratio)
            except TooLarge as exc:
                return self._refuse(signal, "too_large", str(exc), cid, as_json)
            except BadGzip as exc:
                return self._refuse(signal, "malformed", str(exc), cid, as_json)
        elif encoding not in ("identity", ""):
            return self._refuse(signal, "unsupported_media_type",
                                f"Content-Encoding {encoding} is not gzip or identity", cid, as_json)
        # OTLP/JSON is turned into protobuf by Ingest, one ResourceX at a time, so a JSON value
        # that does not fit costs only its resource, as in protobuf.
        outcome = await self._ingest.ingest(signal, TRANSPORT, req.headers, body, cid, json=as_json)
        if outcome.refused is not None:
            return _render_refusal(outcome, as_json)
        return _render_ok(signal, outcome, as_json)

    def too_large(self, path: str, headers: dict[str, str]) -> Response:
        """Hook for bodies refused while still arriving (declared or actual size over the cap)."""
        signal = _PATHS.get(path)
        cid = self._ingest.correlation_id(headers)
        return self._refuse(signal, "too_large", f"request body exceeds {self._max_body} bytes", cid,
                            _media_type(headers) == JSON)

    def _refuse(self, signal: Signal | None, reason: Reason, message: str, cid: str,
                as_json: bool) -> Response:
        return _render_refusal(self._ingest.refuse(signal, TRANSPORT, reason, message, cid), as_json)


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _render_refusal(outcome: Outcome, as_json: bool) -> Response:
    """Error status, google.rpc.Status body in the request's encoding, Retry-After if retryable."""
    assert outcome.refused is not None
    headers = [(CORRELATION_HEADER, outcome.correlation_id)]
    if outcome.retry_after_s is not None:
        headers.append(("Retry-After", str(max(1, round(outcome.retry_after_s)))))
    st = rpc_status(outcome.refused, outcome.message, outcome.retry_after_s)
    body = json_format.MessageToJson(st, indent=None).encode() if as_json else st.SerializeToString()
    return Response(HTTP_STATUS[outcome.refused], body, JSON if as_json else PROTOBUF, headers)


def _render_ok(signal: Signal, outcome: Outcome, as_json: bool) -> Response:
    """200 with the Export*ServiceResponse (partial_success when items were rejected)."""
    headers = [(CORRELATION_HEADER, outcome.correlation_id)]
    ctype = JSON if as_json else PROTOBUF
    if as_json:
        return Response(200, json_mapping.response_json(outcome.rejected_items, outcome.message, signal),
                        ctype, headers)
    return Response(200, export_response(signal, outcome).SerializeToString(), ctype, headers)

