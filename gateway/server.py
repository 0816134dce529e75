"""``telemetry-gateway run``: the gateway process (one worker, or a parent supervising N).

Each worker is one uvloop event loop with its own receivers, batcher and bus, listening on the
shared ports through SO_REUSEPORT (DESIGN.md principle 5). The parent only forks, forwards
SIGTERM/SIGINT and waits; it imports neither grpc nor the receivers, because grpc's threads do
not survive a fork. Shutdown order is the at-least-once order: stop accepting, answer what is
in flight, flush the batcher to the bus, let the embedded pipeline drain, stop the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING

from gateway import config
from gateway.config import Config

if TYPE_CHECKING:  # the worker imports these itself, after the fork
    from gateway.bus.memory import MemoryBus, MemorySource

log = logging.getLogger("gateway.server")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DRAIN_S = 10.0  # how long shutdown waits for the embedded pipeline to write what was accepted
_DRAIN_POLL_S = 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (TG_* env vars override it)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes sharing the ports (default: server.workers)")


def main(ns: argparse.Namespace) -> int:
    try:
        cfg = config.load(ns.config)
        if ns.workers is not None:
            cfg.server.workers = ns.workers
            config._check(cfg)
    except (config.ConfigError, OSError) as exc:
        print(f"telemetry-gateway: {exc}", file=sys.stderr)
        return 2
    # Absolute, so the start-up line says exactly where the file sink writes.
    cfg.pipelines.file.data_dir = os.path.abspath(cfg.pipelines.file.data_dir)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    if cfg.server.workers == 1:
        return _run_worker(cfg, 0)
    return _supervise(cfg)


# --- parent ---------------------------------------------------------------------------------


def _supervise(cfg: Config) -> int:
    """Fork the workers, forward stop signals to them, exit 0 when all exited cleanly."""
    n = cfg.server.workers
    metrics_dir = tempfile.mkdtemp(prefix="telemetry-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by prometheus_client on import
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
                code = _run_worker(cfg, index)
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
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return rc


# --- worker ---------------------------------------------------------------------------------


def _run_worker(cfg: Config, index: int) -> int:
    import uvloop

    uvloop.run(_serve(cfg, index))
    return 0


async def _serve(cfg: Config, index: int) -> None:
    # Imported here, in the worker, after any fork (grpc) and after PROMETHEUS_MULTIPROC_DIR.
    from gateway.admin import Admin
    from gateway.batcher import Batcher
    from gateway.bus.factory import make_bus
    from gateway.bus.memory import MemoryBus
    from gateway.ingest import Ingest, observe_flush
    from gateway.receivers import httpserver, otlp_grpc
    from gateway.receivers.otlp_http import OtlpHttp
    from gateway.tenancy import Authenticator, RateLimiter
    from pipelines.pipeline import Pipeline
    from pipelines.sinks.file import FileSink

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in _SIGNALS:
        loop.add_signal_handler(s, stop.set)
    server_cfg = cfg.server
    workers = server_cfg.workers
    reuse_port = workers > 1

    bus = make_bus(cfg)
    await bus.start()
    pipeline: Pipeline | None = None
    source: MemorySource | None = None
    pipeline_task: asyncio.Task[None] | None = None
    sink: FileSink | None = None
    if isinstance(bus, MemoryBus) and cfg.embedded_pipeline:
        sink = FileSink(cfg.pipelines.file.data_dir, suffix=f"-w{index}" if workers > 1 else "")
        await sink.start()
        source = bus.source()
        pipeline = Pipeline(source, sink, max_records=cfg.pipelines.max_inflight_records)
        pipeline_task = loop.create_task(pipeline.run())

    batcher = Batcher(bus.publish, cfg.batch.max_bytes, cfg.batch.max_age_ms / 1000, observe_flush)
    ingest = Ingest(cfg, batcher, Authenticator(cfg.auth), RateLimiter(cfg.limits))
    listening = False

    def readiness() -> tuple[bool, str]:
        if not listening:
            return False, "receivers not listening"
        return bus.readiness()

    admin_server = await Admin(readiness).serve(cfg.admin.host, cfg.admin.port, reuse_port=reuse_port)
    grpc_server, grpc_port = await otlp_grpc.serve(ingest, server_cfg, reuse_port=reuse_port)
    otlp_http = OtlpHttp(ingest, server_cfg)
    http_server = await httpserver.serve(otlp_http, server_cfg.host, server_cfg.http_port,
                                         max_body=server_cfg.max_request_bytes,
                                         too_large=otlp_http.too_large, reuse_port=reuse_port)
    listening = True
    if index == 0:
        where = (f"sink: files under {sink.data_dir}/<tenant>/<signal>"
                 f"{'-w<worker>' if workers > 1 else ''}.jsonl" if sink else f"bus: {cfg.bus.kind}")
        log.info("telemetry-gateway listening: OTLP/gRPC %s:%d, OTLP/HTTP %s:%d, admin http://%s:%d "
                 "(/metrics /healthz /readyz); workers %d; %s",
                 server_cfg.host, grpc_port, server_cfg.host, http_server.port,
                 cfg.admin.host, admin_server.port, workers, where)

    await stop.wait()
    log.info("worker %d stopping: closing receivers, flushing", index)
    listening = False
    ingest.close_intake()
    await asyncio.gather(http_server.shutdown(grace_s=5.0), grpc_server.stop(grace=5.0))
    await batcher.close()
    if pipeline is not None and pipeline_task is not None and source is not None:
        assert isinstance(bus, MemoryBus)
        await _drain(source, bus)
        pipeline.stop()
        await pipeline_task
    if sink is not None:
        await sink.stop()
    await bus.stop()
    await admin_server.shutdown(grace_s=1.0)
    log.info("worker %d stopped", index)


async def _drain(source: MemorySource, bus: MemoryBus) -> None:
    """Wait (bounded) until the embedded pipeline committed everything on the memory bus."""
    deadline = time.monotonic() + _DRAIN_S
    for _ in range(int(_DRAIN_S / _DRAIN_POLL_S)):
        if source.committed >= bus.end_offset or time.monotonic() > deadline:
            break
        await asyncio.sleep(_DRAIN_POLL_S)
    if source.committed < bus.end_offset:
        log.error("embedded pipeline did not drain within %.0fs; %d record(s) not written",
                  _DRAIN_S, bus.end_offset - source.committed)
