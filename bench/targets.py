"""Speed targets per scenario, kept in the versioned ``bench/targets.yaml``.

A target is a floor or a ceiling a release must keep on the reference machine; a miss makes
``telemetry-gateway bench`` exit non-zero and names the scenario, the figure and the bound, so
a regression is caught by the same command a person runs to size replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.results import RoundResult

TARGETS_PATH = Path(__file__).resolve().parent / "targets.yaml"
_KEYS = {"min_items_per_s", "max_p99_ms", "max_rss_mib", "min_items_per_cpu_s"}


@dataclass(frozen=True)
class Target:
    scenario: str
    min_items_per_s: float | None = None
    max_p99_ms: float | None = None
    max_rss_mib: float | None = None
    min_items_per_cpu_s: float | None = None


class TargetsError(ValueError):
    """The targets file is malformed."""


def parse_targets(doc: Mapping[str, Any]) -> dict[str, Target]:
    if doc.get("version") != 1:
        raise TargetsError(f"targets: unsupported version {doc.get('version')!r} (expected 1)")
    scenarios = doc.get("scenarios") or {}
    if not isinstance(scenarios, dict):
        raise TargetsError("targets: 'scenarios' must be a mapping")
    out: dict[str, Target] = {}
    for name, bounds in scenarios.items():
        if not isinstance(bounds, dict):
            raise TargetsError(f"targets: scenario {name!r} must be a mapping")
        unknown = set(bounds) - _KEYS
        if unknown:
            raise TargetsError(f"targets: scenario {name!r}: unknown key(s) {sorted(unknown)}")
        for key, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TargetsError(f"targets: {name}.{key} must be a number")
        out[str(name)] = Target(str(name), **{k: float(v) for k, v in bounds.items()})
    return out


def load_targets(path: Path = TARGETS_PATH) -> dict[str, Target]:
    return parse_targets(yaml.safe_load(path.read_text()) or {})


@dataclass(frozen=True)
class Verdict:
    scenario: str
    check: str
    measured: float
    bound: float
    ok: bool

    def describe(self) -> str:
        word = "meets" if self.ok else "MISSES"
        return f"{self.scenario}: {self.check} = {self.measured:,.1f} {word} bound {self.bound:,.1f}"


def evaluate(targets: Mapping[str, Target], results: Iterable[RoundResult]) -> list[Verdict]:
    """Check every gateway round that has a target; the Collector is compared, never judged."""
    verdicts: list[Verdict] = []
    for r in results:
        t = targets.get(r.scenario)
        if t is None or r.system != "gateway":
            continue
        if t.min_items_per_s is not None:
            verdicts.append(Verdict(r.scenario, "items/s", r.items_per_s, t.min_items_per_s,
                                    r.items_per_s >= t.min_items_per_s))
        if t.max_p99_ms is not None:
            verdicts.append(Verdict(r.scenario, "p99 ms", r.p99_ms, t.max_p99_ms, r.p99_ms <= t.max_p99_ms))
        if t.max_rss_mib is not None:
            verdicts.append(Verdict(r.scenario, "peak RSS MiB", r.peak_rss_mib, t.max_rss_mib,
                                    r.peak_rss_mib <= t.max_rss_mib))
        if t.min_items_per_cpu_s is not None:
            verdicts.append(Verdict(r.scenario, "items/CPU-s", r.items_per_cpu_s, t.min_items_per_cpu_s,
                                    r.items_per_cpu_s >= t.min_items_per_cpu_s))
    return verdicts


def gaps_to_collector(targets: Mapping[str, Target], results: Iterable[RoundResult]) -> list[str]:
    """How each target compares with what the Collector did under the same load, in words."""
    rounds = list(results)
    out: list[str] = []
    for name, t in targets.items():
        gw = next((r for r in rounds if r.scenario == name and r.system == "gateway"), None)
        if gw is None:
            continue
        peers = [r for r in rounds if r.system == "collector" and r.signal == gw.signal
                 and r.transport == gw.transport and r.mode == gw.mode and r.bus == gw.bus
                 and round(r.offered_items_per_s) == round(gw.offered_items_per_s)]
        if not peers:
            continue
        n = len(peers)
        c_ips = sum(p.items_per_s for p in peers) / n
        c_p99 = sum(p.p99_ms for p in peers) / n
        c_rss = sum(p.peak_rss_mib for p in peers) / n
        c_ipc = sum(p.items_per_cpu_s for p in peers) / n
        parts = []
        if t.min_items_per_s is not None and c_ips:
            parts.append(f"min {t.min_items_per_s:,.0f} items/s = {t.min_items_per_s / c_ips:.2f}x "
                         f"the Collector's {c_ips:,.0f}")
        if t.max_p99_ms is not None and c_p99:
            parts.append(f"max p99 {t.max_p99_ms:,.0f} ms = {t.max_p99_ms / c_p99:.2f}x the Collector's "
                         f"{c_p99:,.1f} ms")
        if t.max_rss_mib is not None and c_rss:
            parts.append(f"max RSS {t.max_rss_mib:,.0f} MiB = {t.max_rss_mib / c_rss:.2f}x the Collector's "
                         f"{c_rss:,.0f} MiB")
        if t.min_items_per_cpu_s is not None and c_ipc:
            share = t.min_items_per_cpu_s / c_ipc
            parts.append(f"min {t.min_items_per_cpu_s:,.0f} items/CPU-s = {share:.2f}x "
                         f"the Collector's {c_ipc:,.0f}")
        if parts:
            out.append(f"{name}: " + "; ".join(parts))
    return out
