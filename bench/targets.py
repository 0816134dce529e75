"""Speed targets per scenario, kept in the versioned ``bench/targets.yaml``.

A target is a floor or a ceiling a release must keep on the reference machine; a miss makes
``telemetry-gateway bench`` exit non-zero and names the scenario, the figure and the bound, so
a regression is caught by the same command a person runs to size replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from bench.results import RoundResult

TARGETS_PATH = Path(__file__).resolve().parent / "targets.yaml"
_KEYS = {"min_items_per_s", "max_p50_ms", "max_p99_ms", "max_rss_mib", "min_items_per_cpu_s"}
# What a ratio target may compare, as RoundResult attributes, and how the report names it.
RATIO_METRICS = {"items_per_s": "items/s", "delivered_items_per_s": "delivered items/s",
                 "items_per_cpu_s": "items/CPU-s", "p50_ms": "p50", "p99_ms": "p99",
                 "peak_rss_mib": "peak RSS"}
# Whom a ratio compares with, always under the same load in the same run: the Collector with the
# base config, the durable Collector, or (for the embedded default) the gateway's Kafka path.
PEERS = ("collector", "collector-durable", "kafka-path")


@dataclass(frozen=True)
class Target:
    """Absolute bounds for every gateway round whose scenario matches ``scenario`` (an fnmatch
    pattern, so ``*-kafka-open10-w1`` covers every signal and transport)."""

    scenario: str
    min_items_per_s: float | None = None
    max_p50_ms: float | None = None
    max_p99_ms: float | None = None
    max_rss_mib: float | None = None
    min_items_per_cpu_s: float | None = None


@dataclass(frozen=True)
class RatioTarget:
    """``metric`` of the gateway divided by the same metric of ``peer`` under the same load in the
    same run, bounded by ``min`` and/or ``max``, for every gateway round matching ``scenarios``."""

    scenarios: str
    peer: str
    metric: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Targets:
    """``bench/targets.yaml``: absolute bounds per scenario pattern and ratios to a peer."""

    scenarios: Mapping[str, Target] = field(default_factory=dict)
    ratios: tuple[RatioTarget, ...] = ()


NO_TARGETS = Targets()


class TargetsError(ValueError):
    """The targets file is malformed."""


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetsError(f"targets: {where} must be a number")
    return float(value)


def parse_targets(doc: Mapping[str, Any]) -> Targets:
    """Validate a targets document (version 1); :class:`TargetsError` names the first bad entry."""
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
        out[str(name)] = Target(str(name), **{k: _number(f"{name}.{k}", v) for k, v in bounds.items()})
    return Targets(out, tuple(_parse_ratio(i, r) for i, r in enumerate(doc.get("ratios") or [])))


def _parse_ratio(index: int, entry: Any) -> RatioTarget:
    where = f"ratios[{index}]"
    if not isinstance(entry, dict):
        raise TargetsError(f"targets: {where} must be a mapping")
    unknown = set(entry) - {"scenarios", "peer", "metric", "min", "max"}
    if unknown:
        raise TargetsError(f"targets: {where}: unknown key(s) {sorted(unknown)}")
    if not isinstance(entry.get("scenarios"), str):
        raise TargetsError(f"targets: {where}.scenarios must be a scenario name or pattern")
    if entry.get("peer") not in PEERS:
        raise TargetsError(f"targets: {where}.peer must be one of {list(PEERS)}")
    if entry.get("metric") not in RATIO_METRICS:
        raise TargetsError(f"targets: {where}.metric must be one of {sorted(RATIO_METRICS)}")
    if "min" not in entry and "max" not in entry:
        raise TargetsError(f"targets: {where} needs min or max")
    bounds = {k: _number(f"{where}.{k}", entry[k]) for k in ("min", "max") if k in entry}
    return RatioTarget(entry["scenarios"], entry["peer"], entry["metric"], **bounds)


def load_targets(path: Path = TARGETS_PATH) -> Targets:
    return parse_targets(yaml.safe_load(path.read_text()) or {})


@dataclass(frozen=True)
class Verdict:
    """One check of one scenario. A ratio check's ``measured`` and ``bound`` are ratios (1.5 = 1.5x)."""

    scenario: str
    check: str
    measured: float
    bound: float
    ok: bool
    ratio: bool = False
    detail: str = ""  # a ratio's two figures, so a miss says by how much in the figures' own units

    def describe(self) -> str:
        word = "meets" if self.ok else "MISSES"
        if self.ratio:
            return (f"{self.scenario}: {self.check} = {self.measured:.2f}x {word} bound {self.bound:.2f}x"
                    + (f" ({self.detail})" if self.detail else ""))
        return f"{self.scenario}: {self.check} = {self.measured:,.1f} {word} bound {self.bound:,.1f}"


def evaluate(targets: Targets, results: Iterable[RoundResult]) -> list[Verdict]:
    """Check every gateway round against the targets its scenario matches, absolute then ratios.

    The Collector is compared, never judged. A ratio whose peer was not measured in this run
    (``--no-collector``, a signal left out) is not judged either: there is nothing to divide by.
    """
    rounds = list(results)
    verdicts: list[Verdict] = []
    for r in rounds:
        if r.system != "gateway":
            continue
        for t in targets.scenarios.values():
            if fnmatchcase(r.scenario, t.scenario):
                verdicts += _absolute(t, r)
    for rt in targets.ratios:
        for r in rounds:
            if r.system == "gateway" and fnmatchcase(r.scenario, rt.scenarios):
                v = _ratio_verdict(rt, r, peer_rounds(rounds, r, rt.peer))
                if v is not None:
                    verdicts.append(v)
    return verdicts


def _absolute(t: Target, r: RoundResult) -> list[Verdict]:
    out: list[Verdict] = []
    if t.min_items_per_s is not None:
        out.append(Verdict(r.scenario, "items/s", r.items_per_s, t.min_items_per_s,
                           r.items_per_s >= t.min_items_per_s))
    if t.max_p50_ms is not None:
        out.append(Verdict(r.scenario, "p50 ms", r.p50_ms, t.max_p50_ms, r.p50_ms <= t.max_p50_ms))
    if t.max_p99_ms is not None:
        out.append(Verdict(r.scenario, "p99 ms", r.p99_ms, t.max_p99_ms, r.p99_ms <= t.max_p99_ms))
    if t.max_rss_mib is not None:
        out.append(Verdict(r.scenario, "peak RSS MiB", r.peak_rss_mib, t.max_rss_mib,
                           r.peak_rss_mib <= t.max_rss_mib))
    if t.min_items_per_cpu_s is not None:
        out.append(Verdict(r.scenario, "items/CPU-s", r.items_per_cpu_s, t.min_items_per_cpu_s,
                           r.items_per_cpu_s >= t.min_items_per_cpu_s))
    return out


def peer_rounds(rounds: Iterable[RoundResult], gw: RoundResult, peer: str) -> list[RoundResult]:
    """The ``peer`` rounds under the same load as the gateway round ``gw``: same signal, transport,
    mode and offered share (or offered rate, for rounds run without a share)."""
    def same_load(r: RoundResult) -> bool:
        return (r.signal, r.transport, r.mode, r.load_pct, round(r.offered_items_per_s)) == \
            (gw.signal, gw.transport, gw.mode, gw.load_pct, round(gw.offered_items_per_s))

    if peer == "kafka-path":
        return [r for r in rounds if r is not gw and r.system == "gateway" and r.bus == "kafka"
                and r.workers == gw.workers and gw.bus != "kafka" and same_load(r)]
    return [r for r in rounds if r.system == peer and same_load(r)]


def _ratio_verdict(rt: RatioTarget, gw: RoundResult, peers: list[RoundResult]) -> Verdict | None:
    if not peers:
        return None
    mine = float(getattr(gw, rt.metric))
    theirs = sum(float(getattr(p, rt.metric)) for p in peers) / len(peers)
    if theirs <= 0:
        return None
    value = mine / theirs
    ok = (rt.min is None or value >= rt.min) and (rt.max is None or value <= rt.max)
    bound = rt.min if rt.min is not None and (rt.max is None or value < rt.min) else rt.max
    assert bound is not None
    name = RATIO_METRICS[rt.metric]
    return Verdict(gw.scenario, f"{name} vs {rt.peer}", value, bound, ok, ratio=True,
                   detail=f"gateway {_figure(rt.metric, mine)}, {rt.peer} {_figure(rt.metric, theirs)}")


def _figure(metric: str, v: float) -> str:
    if metric.endswith("_ms"):
        return f"{v:,.1f} ms"
    if metric == "peak_rss_mib":
        return f"{v:,.0f} MiB"
    return f"{v:,.0f}"


def gaps_to_collector(targets: Targets, results: Iterable[RoundResult]) -> list[str]:
    """How each absolute target compares with what each Collector did under the same load, in words."""
    rounds = list(results)
    out: list[str] = []
    for t in targets.scenarios.values():
        for gw in rounds:
            if gw.system != "gateway" or not fnmatchcase(gw.scenario, t.scenario):
                continue
            for peer in ("collector", "collector-durable"):
                line = _gap_line(t, gw, peer, peer_rounds(rounds, gw, peer))
                if line:
                    out.append(line)
    return out


def _gap_line(t: Target, gw: RoundResult, peer: str, peers: list[RoundResult]) -> str:
    if not peers:
        return ""
    n = len(peers)
    c_ips = sum(p.items_per_s for p in peers) / n
    c_p50 = sum(p.p50_ms for p in peers) / n
    c_p99 = sum(p.p99_ms for p in peers) / n
    c_rss = sum(p.peak_rss_mib for p in peers) / n
    c_ipc = sum(p.items_per_cpu_s for p in peers) / n
    who = "the Collector's" if peer == "collector" else "the durable Collector's"
    parts = []
    if t.min_items_per_s is not None and c_ips:
        share = t.min_items_per_s / c_ips
        parts.append(f"min {t.min_items_per_s:,.0f} items/s = {share:.2f}x {who} {c_ips:,.0f}")
    if t.max_p50_ms is not None and c_p50:
        parts.append(f"max p50 {t.max_p50_ms:,.0f} ms = {t.max_p50_ms / c_p50:.2f}x {who} {c_p50:,.1f} ms")
    if t.max_p99_ms is not None and c_p99:
        parts.append(f"max p99 {t.max_p99_ms:,.0f} ms = {t.max_p99_ms / c_p99:.2f}x {who} {c_p99:,.1f} ms")
    if t.max_rss_mib is not None and c_rss:
        share = t.max_rss_mib / c_rss
        parts.append(f"max RSS {t.max_rss_mib:,.0f} MiB = {share:.2f}x {who} {c_rss:,.0f} MiB")
    if t.min_items_per_cpu_s is not None and c_ipc:
        parts.append(f"min {t.min_items_per_cpu_s:,.0f} items/CPU-s = {t.min_items_per_cpu_s / c_ipc:.2f}x "
                     f"{who} {c_ipc:,.0f}")
    return f"{gw.scenario}: " + "; ".join(parts) if parts else ""
