"""Processes the stack started: spawn into their own session, remember them, stop them all.

A pid file holds the pid and the kernel's start time of the process, so a recycled pid is
never mistaken for ours. Each unit runs as the leader of its own process group, which is what
``stop`` signals: launcher scripts (Elasticsearch's CLI starts a second JVM) go down with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Unit:
    """One long-running process of a service (a service may have several, like a Kafka cluster)."""

    name: str
    argv: Sequence[str]
    log: Path
    pidfile: Path
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at field 3, "state".
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return fields[19]


def _recorded(unit: Unit) -> tuple[int, str] | None:
    try:
        pid_s, started = unit.pidfile.read_text().split()
        return int(pid_s), started
    except (OSError, ValueError):
        return None


def recorded_pid(unit: Unit) -> int | None:
    """The pid in the unit's pid file, alive or not."""
    rec = _recorded(unit)
    return rec[0] if rec else None


def running_pid(unit: Unit) -> int | None:
    """The pid of the unit if the process recorded in its pid file is still that process."""
    rec = _recorded(unit)
    return rec[0] if rec and _start_time(rec[0]) == rec[1] else None


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (ours are session and group leaders)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def spawn(unit: Unit) -> int:
    """Start ``unit`` detached from this command, its output going to its log file."""
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    unit.pidfile.parent.mkdir(parents=True, exist_ok=True)
    if unit.log.exists():
        unit.log.replace(unit.log.with_suffix(".log.1"))
    env = dict(os.environ)
    env.update(unit.env)
    with unit.log.open("wb") as log:
        proc = subprocess.Popen(
            list(unit.argv), cwd=unit.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    started = _start_time(proc.pid)
    unit.pidfile.write_text(f"{proc.pid} {started}\n")
    return proc.pid


def exit_status(pid: int) -> str:
    """Reap a child that ended (when this command started it) and say how it ended.

    A process an earlier command started is not our child; its liveness comes from its pid file.
    """
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "running"
    if waited == 0:
        return "running"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def stop(units: Sequence[Unit], grace: float = 30.0) -> list[tuple[Unit, int, float]]:
    """SIGTERM the units' process groups together, SIGKILL what is left after ``grace`` seconds.

    Together, because a KRaft node waits for a controller quorum to shut down cleanly: stopping
    a cluster one node at a time leaves the last ones waiting for peers that are gone.
    Returns (unit, pid, seconds taken) for each unit that was running.
    """
    began = time.monotonic()
    live: dict[int, Unit] = {}
    for unit in units:
        pid = running_pid(unit)
        if pid is None:
            unit.pidfile.unlink(missing_ok=True)
        else:
            live[pid] = unit
            _signal_group(pid, signal.SIGTERM)
    done: list[tuple[Unit, int, float]] = []
    deadline = began + grace
    while live:
        for pid in [p for p in live if not group_members(p)]:
            live[pid].pidfile.unlink(missing_ok=True)
            done.append((live.pop(pid), pid, time.monotonic() - began))
        if time.monotonic() > deadline + 10:
            raise RuntimeError(f"processes of {sorted(live)} survived SIGKILL")
        if live and time.monotonic() > deadline:
            for pid in live:
                _signal_group(pid, signal.SIGKILL)
        time.sleep(0.1)
    return done


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def run_logged(argv: Sequence[str], log: Path, what: str, env: Mapping[str, str] | None = None,
               cwd: Path | None = None, heartbeat: float = 20.0) -> None:
    """Run a slow install step, its output in ``log``, saying every ``heartbeat`` s that it works.

    Raises RuntimeError with the tail of the log when it fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    began = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                code = proc.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                last = "".join(c for c in log_tail(log, 1) if c.isprintable()).strip()[:100]
                print(f"  ... {what}: {time.monotonic() - began:.0f}s so far ({last})", flush=True)
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}); last lines of {log}:\n{log_tail(log)}")
    print(f"  {what}: done in {time.monotonic() - began:.0f}s", flush=True)
