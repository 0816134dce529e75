"""CPU seconds and memory of the system under test, read from /proc for its whole process tree.

The gateway forks one process per worker and the Collector is one Go process with many
threads; summing over the tree (children found through each process's parent id) charges
each system for everything it runs. CPU comes from utime+stime in /proc/<pid>/stat, memory
from VmRSS (sampled now) and VmHWM (the kernel's own peak) in /proc/<pid>/status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, float]:
    """(ppid, utime+stime seconds) from a /proc/<pid>/stat line.

    The command name sits in parentheses and may contain spaces or parentheses itself, so
    fields are counted from the last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12])
    return ppid, ticks / _CLK_TCK


def parse_status_kib(text: str, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``) in KiB; 0 when absent."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_pids(root: int, proc: Path = Path("/proc")) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid, _ = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def machine_cpu(proc: Path = Path("/proc")) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from the ``cpu`` line of /proc/stat.

    Over a window it says whether the box itself was saturated: on a small machine the broker
    and the generator compete with the system under test, and a flat scaling curve with the
    machine at 100 % is a finding about the machine, not about the gateway.
    """
    fields = [int(x) for x in (proc / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass
class TreeSample:
    cpu_s: float
    rss_kib: int
    hwm_kib: int
    pids: int


def sample_tree(root: int, proc: Path = Path("/proc")) -> TreeSample:
    cpu, rss, hwm, n = 0.0, 0, 0, 0
    for pid in tree_pids(root, proc):
        try:
            _, c = parse_stat((proc / str(pid) / "stat").read_text())
            status = (proc / str(pid) / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue  # exited between listing and reading
        cpu += c
        rss += parse_status_kib(status, "VmRSS")
        hwm += parse_status_kib(status, "VmHWM")
        n += 1
    return TreeSample(cpu, rss, hwm, n)


class TreeMonitor:
    """CPU over the measured window and the peak memory seen, for one process tree."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu_start = self.cpu_end = 0.0
        self.peak_rss_kib = 0
        self.peak_hwm_kib = 0
        self.pids = 0
        self._machine_start = (0.0, 0.0)
        self.machine_busy_cores = 0.0

    def sample(self) -> TreeSample:
        s = sample_tree(self.root)
        self.peak_rss_kib = max(self.peak_rss_kib, s.rss_kib)
        self.peak_hwm_kib = max(self.peak_hwm_kib, s.hwm_kib)
        self.pids = max(self.pids, s.pids)
        return s

    def window(self, edge: str) -> None:
        s = self.sample()
        if edge == "start":
            self.cpu_start = s.cpu_s
            self._machine_start = machine_cpu()
        else:
            self.cpu_end = s.cpu_s
            busy, total = machine_cpu()
            elapsed = total - self._machine_start[1]
            cores = os.cpu_count() or 1
            share = (busy - self._machine_start[0]) / elapsed if elapsed > 0 else 0.0
            self.machine_busy_cores = share * cores

    @property
    def cpu_s(self) -> float:
        return max(0.0, self.cpu_end - self.cpu_start)
