"""Admin endpoints on :8888: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers while the event loop runs (a liveness probe that restarts a wedged process).
``/readyz`` answers 200 only when the receivers listen and the bus says it can take data, so a
load balancer stops sending to a gateway whose Kafka is gone instead of collecting 503s.
``admin.tls.*`` puts it behind TLS (and mTLS), as ``server.tls.*`` does the OTLP ports.
With ``--workers N`` the port is shared: a scrape of ``/metrics`` covers all workers (see
gateway.metrics) and ``/readyz`` answers for all of them (see gateway.readiness).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics
from gateway.readiness import Readiness
from gateway.receivers import httpserver, tls
from gateway.receivers.httpserver import Request, Response
from settings.config import TlsServerConfig


class Admin:
    """The admin endpoints; ``start()`` listens on ``host:port``, ``stop()`` closes."""

    def __init__(self, readiness: Readiness, *, host: str = "0.0.0.0", port: int = 8888,
                 reuse_port: bool = False, tls: TlsServerConfig | None = None) -> None:
        self._readiness = readiness
        self._tls = tls
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._server: httpserver.HttpServer | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one bound, when configured as 0)."""
        return self._server.port if self._server is not None else self._port

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

    async def start(self) -> None:
        self._server = await httpserver.serve(self, self._host, self._port, max_body=64 * 1024,
                                              too_large=self._too_large, reuse_port=self._reuse_port,
                                              tls=tls.maybe_http_tls(self._tls, "admin.tls"))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown(grace_s=1.0)
