"""The parent of a gateway of N workers: fork them, forward stop signals, report how they ended.

Kept apart from the worker (``gateway.server``) as uvicorn keeps ``supervisors/`` apart from its
``server.py``: this process only forks, forwards SIGTERM/SIGINT and waits. It imports neither
grpc nor the receivers, because grpc's threads do not survive a fork; each worker imports them
itself. The workers share the ports through SO_REUSEPORT (principle 5: one process per core),
their metrics through prometheus_client's multiprocess directory and their readiness through
``gateway.readiness``, both in a directory of the run removed at the end.

Exit code: 0 when every worker exited 0; 1 when any did not (a worker down stops the others
rather than leave the host limping on fewer). Workers are not restarted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType

from gateway.server import run_worker
from runtime.lifecycle import STOP_SIGNALS
from settings.config import Config

log = logging.getLogger("gateway.server")


def supervise(cfg: Config) -> int:
    """Fork the workers, forward stop signals to them, exit 0 when all exited cleanly."""
    n = cfg.server.workers
    run_dir = Path(tempfile.mkdtemp(prefix="telemetry-gateway-"))
    metrics_dir, ready_dir = run_dir / "metrics", run_dir / "ready"
    metrics_dir.mkdir()
    ready_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by prometheus_client on import
    children: dict[int, int] = {}
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # no signal between fork and handlers
    for index in range(n):
        pid = os.fork()
        if pid == 0:
            _child(cfg, index, ready_dir)
        children[pid] = index
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for s in STOP_SIGNALS:
        signal.signal(s, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
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


def _child(cfg: Config, index: int, ready_dir: Path) -> None:
    """In the forked worker: default signal handling until its loop installs its own, then run."""
    code = 1
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        code = run_worker(cfg, index, ready_dir)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(code)
