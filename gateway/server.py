"""The gateway worker: one uvloop event loop with its own receivers, batcher and bus.

``telemetry-gateway run`` runs one worker in the process itself, or with ``--workers N`` has
``gateway.supervisor`` fork N of them, which share the ports through SO_REUSEPORT (principle 5).

Each part's start registers its stop (``runtime.lifecycle``), so shutdown is the reverse of
start and that is the at-least-once order: stop accepting, answer what is in flight, flush the
batcher to the bus, let the embedded pipeline drain, stop the bus; admin and the shared
readiness go last.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import lifecycle
from settings.config import Config, ServerConfig

if TYPE_CHECKING:  # the worker imports these itself, after any fork
    import grpc

    from gateway.ingest import Ingest
    from gateway.receivers.httpserver import HttpServer

log = logging.getLogger("gateway.server")

_RECEIVER_GRACE_S = 5.0
# After intake closes and before the listeners stop, both keep answering, with a retryable refusal
# (503 / UNAVAILABLE "gateway is shutting down"). Without it a request that reached the gateway
# just as it stopped was cut: grpc cancels (CANCELLED) the calls it has accepted but not yet
# handed to a handler, and an HTTP client writing on a keep-alive connection closed as idle got a
# broken pipe or reset. Measured under load (tests/e2e/test_shutdown_signals.py), 0.3 s removed
# both on this 2-core machine; 0.5 s leaves a margin.
_REFUSE_BEFORE_STOP_S = 0.5


def run_worker(cfg: Config, index: int, ready_dir: Path | None = None) -> int:
    """``ready_dir``: where the workers of a multi-worker gateway share their readiness."""
    import uvloop

    try:
        return uvloop.run(_serve(cfg, index, ready_dir))
    except OSError as exc:  # a port in use, a data dir that cannot be created: say so, no traceback
        log.error("worker %d cannot start: %s", index, exc)
        return 1


async def _serve(cfg: Config, index: int, ready_dir: Path | None) -> int:
    """Run one worker until SIGTERM/SIGINT (exit 0) or until its embedded pipeline fails (1)."""
    stop = asyncio.Event()

    def on_signal(_sig: signal.Signals) -> None:
        stop.set()

    lifecycle.on_stop_signals(on_signal)
    worker = Worker(cfg, index, stop, ready_dir)
    async with AsyncExitStack() as stack:
        await lifecycle.enter(stack, worker)
        await stop.wait()
    return 1 if worker.failed else 0


class Worker(lifecycle.Composite):
    """Admin, bus, (embedded) pipeline, batcher and receivers of one process."""

    def __init__(self, cfg: Config, index: int, stop: asyncio.Event, ready_dir: Path | None = None) -> None:
        # Imported here, in the worker, after any fork (grpc) and after PROMETHEUS_MULTIPROC_DIR.
        from bus.factory import make_bus
        from gateway.batcher import batcher_for
        from gateway.ingest import Ingest, observe_flush
        from gateway.readiness import SharedReadiness, expose
        from gateway.tenancy import Authenticator, RateLimiter

        self.cfg = cfg
        self.index = index
        self.failed = False
        self._stop = stop
        self._listening = False
        embedded = None
        if cfg.runs_embedded_pipeline:
            from gateway.embedded import Embedded

            embedded = Embedded(cfg, index, on_failure=self._pipeline_failed)
        self._embedded = embedded
        self.bus = make_bus(cfg, base=embedded.bus if embedded is not None else None)
        self.batcher = batcher_for(cfg.batch, self.bus.publish, observe_flush)
        self.ingest = Ingest(cfg, self.batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits),
                             max_item_bytes=self.bus.max_item_bytes)
        # With several workers /readyz answers for all of them (gateway.readiness).
        self.shared = (SharedReadiness(ready_dir, index, cfg.server.workers, self.readiness)
                       if ready_dir is not None else None)
        if self.shared is None:
            expose(self.readiness, index)

    def readiness(self) -> tuple[bool, str]:
        if not self._listening:
            return False, "receivers not listening"
        return self.bus.readiness()

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        from gateway.admin import Admin

        cfg, server_cfg = self.cfg, self.cfg.server
        reuse_port = server_cfg.workers > 1
        stack.callback(log.info, "worker %d stopped", self.index)
        if self.shared is not None:
            await lifecycle.enter(stack, self.shared)
        # Admin answers until everything else has stopped (its stop is registered first), but it
        # listens only once the receivers do: whoever gets an answer from it finds them up.
        admin = Admin(self.shared or self.readiness, host=cfg.admin.host, port=cfg.admin.port,
                      reuse_port=reuse_port, tls=cfg.admin.tls)
        stack.push_async_callback(admin.stop)
        await lifecycle.enter(stack, self.bus)
        if self._embedded is not None:
            await lifecycle.enter(stack, self._embedded)
        stack.push_async_callback(self.batcher.close)
        receivers = await lifecycle.enter(stack, Receivers(self.ingest, server_cfg, reuse_port=reuse_port))
        stack.callback(self._close_intake)
        await admin.start()
        self._listening = True
        if self.shared is not None:
            self.shared.publish()  # ready now, not at the next period
        if self.index == 0:
            log.info("telemetry-gateway listening: OTLP/gRPC %s:%d, OTLP/HTTP %s:%d, admin http://%s:%d "
                     "(/metrics /healthz /readyz); workers %d; %s",
                     server_cfg.host, receivers.grpc_port, server_cfg.host, receivers.http_port,
                     cfg.admin.host, admin.port, server_cfg.workers,
                     self._embedded.describe() if self._embedded else f"bus: {cfg.bus.kind}")

    def _close_intake(self) -> None:
        """The first step of stopping: not ready any more, new requests refused, batches flushed."""
        log.info("worker %d stopping: closing receivers, flushing", self.index)
        self._listening = False
        if self.shared is not None:
            self.shared.publish()  # the host stops being ready at once
        self.ingest.close_intake()

    def _pipeline_failed(self) -> None:
        """The embedded sink cannot write, or shutdown left acknowledged data unwritten: exit 1.

        While running, accepting more would only fill memory, so the worker stops.
        """
        self.failed = True
        self._stop.set()


class Receivers:
    """OTLP/gRPC and OTLP/HTTP on the configured ports; stopping answers what is in flight."""

    def __init__(self, ingest: Ingest, cfg: ServerConfig, *, reuse_port: bool) -> None:
        self._ingest = ingest
        self._cfg = cfg
        self._reuse_port = reuse_port
        self._grpc: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self.grpc_port = 0

    @property
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    async def start(self) -> None:
        from gateway.receivers import httpserver, otlp_grpc, tls
        from gateway.receivers.otlp_http import OtlpHttp

        cfg = self._cfg
        # One source for both transports: a change is read, and a failure counted, once.
        tls_source = tls.maybe_cert_source(cfg.tls, "server.tls")
        self._grpc, self.grpc_port = await otlp_grpc.serve(self._ingest, cfg, reuse_port=self._reuse_port,
                                                           tls_source=tls_source)
        otlp_http = OtlpHttp(self._ingest, cfg)
        try:
            self._http = await httpserver.serve(otlp_http, cfg.host, cfg.http_port,
                                                max_body=cfg.max_request_bytes,
                                                too_large=otlp_http.too_large, reuse_port=self._reuse_port,
                                                timeouts=otlp_http.timeouts,
                                                max_buffered=cfg.max_buffered_request_bytes,
                                                tls=tls.maybe_http_tls(cfg.tls, "server.tls", tls_source))
        except BaseException:
            await self.stop()  # the HTTP port is taken: do not leave gRPC listening
            raise

    async def stop(self) -> None:
        """Refuse for ``_REFUSE_BEFORE_STOP_S`` (intake is closed by then), then stop listening and
        answer what is in flight, up to ``_RECEIVER_GRACE_S``."""
        if self._grpc is not None and self._http is not None:  # both listening (not a failed start)
            await asyncio.sleep(_REFUSE_BEFORE_STOP_S)
        grpc_server, self._grpc = self._grpc, None
        http, self._http = self._http, None
        stopping: list[Awaitable[None]] = []
        if http is not None:
            stopping.append(http.shutdown(grace_s=_RECEIVER_GRACE_S))
        if grpc_server is not None:
            stopping.append(grpc_server.stop(grace=_RECEIVER_GRACE_S))
        await asyncio.gather(*stopping)
