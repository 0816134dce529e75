"""Admin endpoints on :8888: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers while the event loop runs (a liveness probe that restarts a wedged process).
``/readyz`` answers 200 only when the receivers listen and the bus says it can take data, so a
load balancer stops sending to a gateway whose Kafka is gone instead of collecting 503s.
With ``--workers N`` the port is shared: a scrape of ``/metrics`` covers all workers (see
gateway.metrics) and ``/readyz`` answers for all of them (see gateway.readiness).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics
from gateway.readiness import Readiness
from gateway.receivers import httpserver
from gateway.receivers.httpserver import Request, Response


class Admin:
    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    async def __call__(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"use GET\n", headers=[("Allow", "GET")])
        if req.path == "/metrics":
            return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)
        if req.path == "/healthz":
            return Response(200, b"ok\n")
        if req.path == "/readyz":
            ready, reason = self._readiness()
            text = f"{'ready' if ready else 'not ready'}: {reason}\n"
            return Response(200 if ready else 503, text.encode())
        return Response(404, b"not found; try /metrics, /healthz or /readyz\n")

    @staticmethod
    def _too_large(path: str, headers: dict[str, str]) -> Response:
        return Response(413, b"admin requests carry no body\n")

    async def serve(self, host: str, port: int, *, reuse_port: bool) -> httpserver.HttpServer:
        return await httpserver.serve(self, host, port, max_body=64 * 1024, too_large=self._too_large,
                                      reuse_port=reuse_port)
