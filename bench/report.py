"""Write a run's results: JSON (everything), a Markdown table (for people), a PNG plot.

All three go to ``bench-results/<timestamp>/`` so runs never overwrite each other and a
comparison across builds is a diff of two directories.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results import RoundResult
from bench.targets import Verdict


def comparison_key(r: RoundResult) -> tuple[str, str, str, str, float]:
    """What must match for two rounds to be compared: the load, not the system or workers."""
    return (r.signal, r.transport, r.mode, r.bus, round(r.offered_items_per_s))


def ratios(results: Sequence[RoundResult]) -> list[dict[str, Any]]:
    """Gateway / Collector ratios for each gateway round that has Collector rounds under the same load.

    Several Collector rounds of one load (alternating rounds) are averaged. Ratio > 1 means the
    gateway has more of it: good for items per CPU-second, bad for p99 and RSS.
    """
    peers: dict[tuple[str, str, str, str, float], list[RoundResult]] = {}
    for r in results:
        if r.system == "collector":
            peers.setdefault(comparison_key(r), []).append(r)
    out: list[dict[str, Any]] = []
    for r in results:
        if r.system != "gateway" or comparison_key(r) not in peers:
            continue
        cs = peers[comparison_key(r)]
        c_ips = statistics.fmean(c.items_per_s for c in cs)
        c_ipc = statistics.fmean(c.items_per_cpu_s for c in cs)
        c_p99 = statistics.fmean(c.p99_ms for c in cs)
        c_rss = statistics.fmean(c.peak_rss_mib for c in cs)
        out.append({
            "scenario": r.scenario, "workers": r.workers, "collector_rounds": len(cs),
            "items_per_s": _ratio(r.items_per_s, c_ips),
            "items_per_cpu_s": _ratio(r.items_per_cpu_s, c_ipc),
            "p99": _ratio(r.p99_ms, c_p99),
            "rss": _ratio(r.peak_rss_mib, c_rss),
            "collector": {"items_per_s": round(c_ips, 1), "items_per_cpu_s": round(c_ipc, 1),
                          "p99_ms": round(c_p99, 3), "peak_rss_mib": round(c_rss, 1)},
        })
    return out


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _cores(r: RoundResult) -> str:
    own = r.cpu_s / r.duration_s if r.duration_s else 0.0
    return f"{own:.2f} ({r.machine_busy_cores:.2f})"


def _fmt(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def markdown(results: Sequence[RoundResult], verdicts: Sequence[Verdict], meta: Mapping[str, Any],
             target_gaps: Sequence[str] = (), rounds: Sequence[RoundResult] = ()) -> str:
    """``results``: one row per scenario and system (medians); ``rounds``: every round, if repeated."""
    lines = [f"# Benchmark {meta.get('started', '')}", ""]
    lines.append(f"Machine: {meta.get('cpus')} CPUs; generator: {meta.get('generator', '')}; "
                 f"Collector config: {meta.get('collector_config', '-')}; git {meta.get('git', '?')}.")
    repeated = len(rounds) > len(results)
    lines += ["", "## Results" + (" (medians of repeated rounds)" if repeated else ""), ""]
    lines += _table(results)
    rs = ratios(results)
    if rs:
        lines += ["", "## Gateway / Collector (same load)", "",
                  "| scenario | items/s | items per CPU-s | p99 | peak RSS |", "|---|--:|--:|--:|--:|"]
        for x in rs:
            lines.append(f"| {x['scenario']} | {x['items_per_s']:.2f}x | {x['items_per_cpu_s']:.2f}x | "
                         f"{x['p99']:.2f}x | {x['rss']:.2f}x |")
        lines += ["", "Above 1 the gateway has more of it: better for items/s and items per CPU-second, "
                  "worse for p99 and RSS."]
    if verdicts:
        lines += ["", "## Targets (bench/targets.yaml)", ""]
        lines += [f"- {'ok' if v.ok else '**MISSED**'}: {v.describe()}" for v in verdicts]
    if target_gaps:
        lines += ["", "## Targets next to the Collector's figures", ""]
        lines += [f"- {g}" for g in target_gaps]
    if repeated:
        lines += ["", "## Every round, in the order run", ""]
        lines += _table(rounds)
    return "\n".join(lines) + "\n"


def _table(results: Sequence[RoundResult]) -> list[str]:
    lines = ["| scenario | system | workers | offered items/s | items/s | MB/s | items/CPU-s | "
             "p50 ms | p90 ms | p99 ms | p99.9 ms | peak RSS MiB | cores used (machine) | errors "
             "| acked / delivered | loss check |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in results:
        lat = r.latency_ms
        errors = sum(r.errors.values())
        lines.append(
            f"| {r.scenario} | {r.system} | {r.workers if r.system == 'gateway' else '-'} | "
            f"{_fmt(r.offered_items_per_s) if r.offered_items_per_s else 'max'} | {_fmt(r.items_per_s)} | "
            f"{_fmt(r.bytes_per_s / 1e6, 1)} | {_fmt(r.items_per_cpu_s)} | {lat.get('p50', 0):.1f} | "
            f"{lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | {lat.get('p99.9', 0):.1f} | "
            f"{_fmt(r.peak_rss_mib)} | {_cores(r)} | {errors} | "
            f"{_fmt(r.acked_items)} / {_fmt(r.delivered_items)} | "
            f"{'ok' if r.loss_ok else 'LOST ' + _fmt(r.acked_items - r.delivered_items)} |")
    return lines


def plot(results: Sequence[RoundResult], path: Path, subtitle: str = "") -> bool:
    """Latency vs offered load (both systems) and throughput vs gateway workers; False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    open_rounds = [r for r in results if r.mode == "open"]
    closed = [r for r in results if r.mode == "closed"]
    if not open_rounds and not closed:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {"gateway": "tab:blue", "collector": "tab:orange"}
    for (system, workers), rounds in _group_open(open_rounds).items():
        rounds.sort(key=lambda r: r.offered_items_per_s)
        x = [r.offered_items_per_s / 1000 for r in rounds]
        label = f"{system} w{workers}" if system == "gateway" else system
        colour = colours.get(system, "grey")
        style = "-" if workers == 1 or system != "gateway" else "-."
        ax1.plot(x, [r.p99_ms for r in rounds], style, marker="o", color=colour, label=f"{label} p99")
        ax1.plot(x, [r.latency_ms.get("p50", 0) for r in rounds], ":", marker=".", color=colour,
                 label=f"{label} p50")
    ax1.set_xlabel("offered load (thousand items/s)")
    ax1.set_ylabel("latency from intended send (ms, log)")
    ax1.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set_title("Latency vs offered load (open loop)")
    ax1.grid(True, which="both", alpha=0.3)
    if open_rounds:
        ax1.legend(fontsize=8)
    gw = sorted((r for r in closed if r.system == "gateway"), key=lambda r: r.workers)
    labels = [f"gateway w{r.workers}" for r in gw]
    values = [r.items_per_s / 1000 for r in gw]
    cpu = [r.cpu_s / r.duration_s if r.duration_s else 0.0 for r in gw]
    col = [r for r in closed if r.system == "collector"]
    if col:
        labels.append("collector")
        values.append(statistics.fmean(r.items_per_s for r in col) / 1000)
        cpu.append(statistics.fmean(r.cpu_s / r.duration_s if r.duration_s else 0.0 for r in col))
    bars = ax2.bar(labels, values, color=[colours["gateway"]] * len(gw) + [colours["collector"]] * bool(col))
    for bar, c in zip(bars, cpu, strict=True):
        ax2.annotate(f"{bar.get_height():,.1f}k/s\n{c:.2f} cores", (bar.get_x() + bar.get_width() / 2,
                     bar.get_height()), ha="center", va="bottom", fontsize=9)
    ax2.set_ylabel("throughput (thousand items/s, closed loop)")
    ax2.set_title("Throughput vs gateway workers (CPU used in cores)")
    ax2.margins(y=0.2)
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _group_open(rounds: Iterable[RoundResult]) -> dict[tuple[str, int], list[RoundResult]]:
    out: dict[tuple[str, int], list[RoundResult]] = {}
    for r in rounds:
        out.setdefault((r.system, r.workers if r.system == "gateway" else 0), []).append(r)
    return out


def write_all(outdir: Path, results: Sequence[RoundResult], verdicts: Sequence[Verdict],
              meta: Mapping[str, Any], target_gaps: Sequence[str] = (),
              rounds: Sequence[RoundResult] | None = None) -> dict[str, Path]:
    """``results`` are per scenario and system (medians when repeated); ``rounds`` every round run."""
    outdir.mkdir(parents=True, exist_ok=True)
    every = list(rounds) if rounds is not None else list(results)
    doc = {
        "meta": dict(meta),
        "summary": [r.to_dict() for r in results],
        "rounds": [r.to_dict() for r in every],
        "ratios": ratios(results),
        "targets": [{"scenario": v.scenario, "check": v.check, "measured": round(v.measured, 3),
                     "bound": v.bound, "ok": v.ok} for v in verdicts],
        "target_gaps": list(target_gaps),
        "loss_check_ok": all(r.loss_ok for r in every),
    }
    paths = {"json": outdir / "report.json", "markdown": outdir / "report.md", "png": outdir / "plot.png"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results, verdicts, meta, target_gaps, every))
    subtitle = f"{meta.get('generator', '')}; Collector config: {meta.get('collector_config', '?')}"
    if not plot(results, paths["png"], subtitle if meta.get("generator") else ""):
        del paths["png"]
    return paths
