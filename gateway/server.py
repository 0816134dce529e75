"""``telemetry-gateway run``: the gateway process (one worker, or a parent supervising N).

Each worker is one uvloop event loop with its own receivers, batcher and bus, listening on the
shared ports through SO_REUSEPORT (DESIGN.md principle 5). The parent only forks, forwards
SIGTERM/SIGINT and waits; it imports neither grpc nor the receivers, because grpc's threads do
not survive a fork. Shutdown order is the at-least-once order: stop accepting, answer what is
in flight, flush the batcher to the bus, let the embedded pipeline drain, stop the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from settings.config import Config

if TYPE_CHECKING:  # the worker imports these itself, after the fork
    from gateway.embedded import Embedded

log = logging.getLogger("gateway.server")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# --- parent ---------------------------------------------------------------------------------


def supervise(cfg: Config) -> int:
    """Fork the workers, forward stop signals to them, exit 0 when all exited cleanly."""
    n = cfg.server.workers
    run_dir = Path(tempfile.mkdtemp(prefix="telemetry-gateway-"))
    metrics_dir, ready_dir = run_dir / "metrics", run_dir / "ready"
    metrics_dir.mkdir()
    ready_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by prometheus_client on import
    children: dict[int, int] = {}
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # no signal between fork and handlers
    for index in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for s in _SIGNALS:
                    signal.signal(s, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                code = run_worker(cfg, index, ready_dir)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for s in _SIGNALS:
        signal.signal(s, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    log.info("supervising %d workers: %s", n, ", ".join(str(p) for p in children))

    from gateway import metrics  # after PROMETHEUS_MULTIPROC_DIR is set

    rc = 0
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        metrics.mark_worker_dead(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            rc = 1
            log.error("worker %d (pid %d) exited with %d", index, pid, code)
            if not stopping:
                forward(signal.SIGTERM, None)  # one worker down: stop the rest rather than limp
    shutil.rmtree(run_dir, ignore_errors=True)
    return rc


# --- worker ---------------------------------------------------------------------------------


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
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in _SIGNALS:
        loop.add_signal_handler(s, stop.set)
    worker = _Worker(cfg, index, stop, ready_dir)
    await worker.start()
    await stop.wait()
    await worker.stop()
    return 1 if worker.failed else 0


class _Worker:
    """Receivers, batcher, bus and (embedded) pipeline of one process, started and stopped in order."""

    def __init__(self, cfg: Config, index: int, stop: asyncio.Event, ready_dir: Path | None = None) -> None:
        # Imported here, in the worker, after any fork (grpc) and after PROMETHEUS_MULTIPROC_DIR.
        from bus.factory import make_bus
        from gateway.batcher import Batcher
        from gateway.ingest import Ingest, observe_flush
        from gateway.readiness import SharedReadiness
        from gateway.tenancy import Authenticator, RateLimiter

        self.cfg = cfg
        self.index = index
        self.failed = False
        self._stop = stop
        self._listening = False
        self._embedded: Embedded | None = None
        if cfg.runs_embedded_pipeline:
            from gateway.embedded import Embedded

            self._embedded = Embedded(cfg, index)
        self.bus = make_bus(cfg, base=self._embedded.bus if self._embedded is not None else None)
        self.batcher = Batcher(self.bus.publish, cfg.batch.max_bytes, cfg.batch.max_age_ms / 1000,
                               observe_flush)
        self.ingest = Ingest(cfg, self.batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits),
                             max_item_bytes=self.bus.max_item_bytes)
        # With several workers /readyz answers for all of them (gateway.readiness).
        self.shared = (SharedReadiness(ready_dir, index, cfg.server.workers, self.readiness)
                       if ready_dir is not None else None)
        self._publishing: asyncio.Task[None] | None = None

    def readiness(self) -> tuple[bool, str]:
        if not self._listening:
            return False, "receivers not listening"
        return self.bus.readiness()

    async def start(self) -> None:
        from gateway.admin import Admin
        from gateway.receivers import httpserver, otlp_grpc
        from gateway.receivers.otlp_http import OtlpHttp

        cfg, server_cfg = self.cfg, self.cfg.server
        reuse_port = server_cfg.workers > 1
        await self.bus.start()
        if self._embedded is not None:
            await self._embedded.start(on_failure=self._pipeline_failed)
        if self.shared is not None:
            self._publishing = asyncio.get_running_loop().create_task(self.shared.run())
        self.admin = await Admin(self.shared or self.readiness).serve(cfg.admin.host, cfg.admin.port,
                                                                      reuse_port=reuse_port)
        self.grpc, grpc_port = await otlp_grpc.serve(self.ingest, server_cfg, reuse_port=reuse_port)
        otlp_http = OtlpHttp(self.ingest, server_cfg)
        self.http = await httpserver.serve(otlp_http, server_cfg.host, server_cfg.http_port,
                                           max_body=server_cfg.max_request_bytes,
                                           too_large=otlp_http.too_large, reuse_port=reuse_port,
                                           timeouts=otlp_http.timeouts)
        self._listening = True
        if self.shared is not None:
            self.shared.publish()  # ready now, not at the next period
        if self.index == 0:
            log.info("telemetry-gateway listening: OTLP/gRPC %s:%d, OTLP/HTTP %s:%d, admin http://%s:%d "
                     "(/metrics /healthz /readyz); workers %d; %s",
                     server_cfg.host, grpc_port, server_cfg.host, self.http.port, cfg.admin.host,
                     self.admin.port, server_cfg.workers,
                     self._embedded.describe() if self._embedded else f"bus: {cfg.bus.kind}")

    def _pipeline_failed(self) -> None:
        """The embedded sink cannot write: accepting more would only fill memory. Stop, exit 1."""
        self.failed = True
        self._stop.set()

    async def stop(self) -> None:
        log.info("worker %d stopping: closing receivers, flushing", self.index)
        self._listening = False
        if self.shared is not None:
            self.shared.publish()  # the host stops being ready at once
        self.ingest.close_intake()
        await asyncio.gather(self.http.shutdown(grace_s=5.0), self.grpc.stop(grace=5.0))
        await self.batcher.close()
        if self._embedded is not None and not await self._embedded.stop():
            self.failed = True  # acknowledged data was lost: the exit code must say so
        await self.bus.stop()
        await self.admin.shutdown(grace_s=1.0)
        if self._publishing is not None:
            self._publishing.cancel()
            await asyncio.wait((self._publishing,))
        if self.shared is not None:
            self.shared.close()
        log.info("worker %d stopped", self.index)
