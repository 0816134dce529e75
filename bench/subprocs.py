"""Spawn and stop the real processes the bench and the tests run (gateway, workers, Kafka, Collector).

One set of rules for all of them: the child gets its own session, so that whatever it forks
(gateway workers, a JVM's helpers) can be killed with it and nothing outlives a run; its output
goes to a log file, so a failure can quote it; and a stop is a SIGTERM with a deadline, because
a clean shutdown is part of what is tested, with SIGKILL only as the last resort.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Binding port 0 lets the kernel choose, so parallel and repeated runs never collide on a
    fixed port; the socket is closed at once, for the child to bind the port itself.
    """
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, for a child that binds several (a Kafka cluster's nodes).

    Every socket stays bound until all are chosen: ports asked for one at a time may come back
    equal once the previous socket is closed.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def spawn(args: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr in ``log_path``, in a new session.

    The log is what a failed start or an unexpected exit quotes; a new session makes the child
    the leader of its own process group, which ``kill_group`` needs to take down the whole tree.
    ``env`` None inherits this process's environment.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(list(args), env=None if env is None else dict(env), cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def terminate(proc: subprocess.Popen[bytes], within_s: float, *, group: bool = False) -> int | None:
    """SIGTERM ``proc`` and wait up to ``within_s``; its exit code, or None if it had to be killed.

    ``group`` sends the SIGTERM to the whole process group, so children that would not get it
    from their parent still shut down cleanly. On timeout the group is SIGKILLed and reaped, so nothing is
    left running, and None lets the caller fail with its own message. A process that has already
    exited gives its exit code without any signal.
    """
    if proc.poll() is not None:
        return proc.returncode
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        # Not reaped yet, so the group id cannot have been reused: safe to kill without a check.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def terminate_together(procs: Sequence[subprocess.Popen[bytes]], within_s: float) -> list[int | None]:
    """SIGTERM the process groups of ``procs`` at once, then wait for each as ``terminate`` does.

    At once, because peers may wait for each other to shut down cleanly (a KRaft node waits for a
    controller quorum): stopping them one by one leaves the last ones waiting for peers that are gone.
    """
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + within_s
    return [terminate(proc, max(0.1, deadline - time.monotonic()), group=True) for proc in procs]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s whole process group and reap it, if it is still running.

    For crash tests and clean-up after a failure: no chance to flush or commit, and no child left
    behind. Once the leader is reaped its group id may be reused, so an exited process is left alone.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
