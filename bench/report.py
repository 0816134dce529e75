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
from bench.targets import Verdict, peer_rounds

RATIO_PEERS = ("collector", "collector-durable")
_PEER_TITLES = {"collector": "Collector", "collector-durable": "durable Collector",
                "kafka-path": "Kafka path"}
_RATIO_COLUMNS = (("items_per_s", "items/s"), ("delivered", "delivered items/s"),
                  ("items_per_cpu_s", "items/CPU-s"), ("p50", "p50"), ("p99", "p99"), ("rss", "peak RSS"))


def ratios(results: Sequence[RoundResult]) -> list[dict[str, Any]]:
    """Gateway / peer ratios for each gateway result that has a peer under the same load.

    Peers: the Collector (base config) and the durable Collector; for the embedded default
    (memory bus) the gateway's own Kafka path. Several peer rounds of one load are averaged.
    Shape: ``[{"scenario", "workers", "bus", "peers": {peer: {"rounds", "items_per_s", "delivered",
    "items_per_cpu_s", "p50", "p99", "rss", "figures": {...}}}}]``; ``delivered`` compares
    :attr:`RoundResult.delivered_items_per_s` (what the embedded default's sink kept up with). A
    ratio above 1 means the gateway has more of it: better for items/s and items per CPU-second,
    worse for latency and RSS.
    """
    out: list[dict[str, Any]] = []
    for r in results:
        if r.system != "gateway":
            continue
        names = RATIO_PEERS if r.bus == "kafka" else ("kafka-path",)
        peers = {}
        for name in names:
            ps = peer_rounds(results, r, name)
            if ps:
                peers[name] = _peer_ratios(r, ps)
        if peers:
            out.append({"scenario": r.scenario, "workers": r.workers, "bus": r.bus, "peers": peers})
    return out


def _peer_ratios(r: RoundResult, ps: Sequence[RoundResult]) -> dict[str, Any]:
    ips = statistics.fmean(p.items_per_s for p in ps)
    dps = statistics.fmean(p.delivered_items_per_s for p in ps)
    ipc = statistics.fmean(p.items_per_cpu_s for p in ps)
    p50 = statistics.fmean(p.p50_ms for p in ps)
    p99 = statistics.fmean(p.p99_ms for p in ps)
    rss = statistics.fmean(p.peak_rss_mib for p in ps)
    return {
        "rounds": len(ps), "items_per_s": _ratio(r.items_per_s, ips),
        "delivered": _ratio(r.delivered_items_per_s, dps),
        "items_per_cpu_s": _ratio(r.items_per_cpu_s, ipc), "p50": _ratio(r.p50_ms, p50),
        "p99": _ratio(r.p99_ms, p99), "rss": _ratio(r.peak_rss_mib, rss),
        "figures": {"items_per_s": round(ips, 1), "delivered_items_per_s": round(dps, 1),
                    "items_per_cpu_s": round(ipc, 1), "p50_ms": round(p50, 3),
                    "p99_ms": round(p99, 3), "peak_rss_mib": round(rss, 1)},
    }


def ratio_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One Markdown table, a row per scenario: each cell "gateway ÷ Collector · gateway ÷ durable
    Collector" (the embedded default's row: ÷ the Kafka path); "-" where a peer was not run."""
    lines = ["| scenario | gateway ÷ | " + " | ".join(title for _, title in _RATIO_COLUMNS) + " |",
             "|---|---|" + "--:|" * len(_RATIO_COLUMNS)]
    for row in rows:
        peers: Mapping[str, Mapping[str, Any]] = row["peers"]
        names = list(RATIO_PEERS) if row["bus"] == "kafka" else ["kafka-path"]
        cells = [" · ".join(f"{peers[n][key]:.2f}x" if n in peers else "-" for n in names)
                 for key, _ in _RATIO_COLUMNS]
        who = " · ".join(_PEER_TITLES[n] for n in names)
        lines.append(f"| {row['scenario']} | {who} | " + " | ".join(cells) + " |")
    return lines


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
        lines += ["", "## Ratios: gateway ÷ peer, same load, same run", ""]
        lines += ratio_table(rs)
        lines += ["", "Above 1 the gateway has more of it: better for items/s and items per CPU-second, "
                  "worse for p50, p99 and RSS. Delivered items/s counts until the last acknowledged item was "
                  "delivered: on the memory bus an acknowledgement means queued, so the embedded default's "
                  "file sink shows there. Open-loop loads (openNN) are shares of the gateway's "
                  "closed-loop maximum of the same signal and transport in this run; the memory-bus rows "
                  "are the embedded default (file sink) against the gateway's Kafka path."]
    if verdicts:
        lines += ["", "## Targets (bench/targets.yaml)", ""]
        lines += [f"- {'ok' if v.ok else '**MISSED**'}: {v.describe()}" for v in verdicts]
    if target_gaps:
        lines += ["", "## Targets next to the Collector's figures", ""]
        lines += [f"- {g}" for g in target_gaps]
    noted = [f"- {r.scenario} ({r.system}): {note}" for r in (rounds or results) for note in r.notes
             if not note.startswith("median of")]
    if noted:
        lines += ["", "## Notes", "", *noted]
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


_COLOURS = {"gateway": "tab:blue", "collector": "tab:orange", "collector-durable": "tab:red",
            "embedded": "tab:green"}


def _who(r: RoundResult) -> str:
    """The system as the plot names it: the gateway's memory-bus rounds are the embedded default."""
    if r.system != "gateway":
        return r.system
    return "embedded" if r.bus != "kafka" else "gateway"


def plot(results: Sequence[RoundResult], path: Path, subtitle: str = "") -> bool:
    """Latency (p50, p99) against load for every system, one panel per signal and transport, and
    closed-loop throughput of every system side by side; False if nothing to plot.

    The load axis is the share of the gateway's maximum when the run measured one (``compare``),
    else the offered items/s.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    open_rounds = [r for r in results if r.mode == "open"]
    closed = [r for r in results if r.mode == "closed"]
    if not open_rounds and not closed:
        return False
    panels: dict[tuple[str, str], list[RoundResult]] = {}
    for r in open_rounds:
        panels.setdefault((r.signal, r.transport), []).append(r)
    n = len(panels) + 1
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, ((signal, transport), rounds) in zip(flat, panels.items(), strict=False):
        by_pct = all(r.load_pct is not None for r in rounds)
        for (who, workers), rs in _group_open(rounds).items():
            rs.sort(key=lambda r: r.offered_items_per_s)
            x = [float(r.load_pct or 0) if by_pct else r.offered_items_per_s / 1000 for r in rs]
            label = f"{who} w{workers}" if who == "gateway" and workers != 1 else who
            colour = _COLOURS.get(who, "grey")
            ax.plot(x, [r.p99_ms for r in rs], "-", marker="o", color=colour, label=f"{label} p99")
            ax.plot(x, [r.p50_ms for r in rs], ":", marker=".", color=colour, label=f"{label} p50")
        ax.set_xlabel("offered load (% of the gateway's max)" if by_pct
                      else "offered load (thousand items/s)")
        ax.set_ylabel("latency from intended send (ms, log)")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{signal} over {transport}: latency vs load (open loop)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _throughput_panel(flat[len(panels)], closed)
    for ax in flat[n:]:
        ax.set_visible(False)
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _throughput_panel(ax: Any, closed: Sequence[RoundResult]) -> None:
    """Grouped bars: closed-loop items/s of each system per signal and transport, cores used on top."""
    groups = sorted({(r.signal, r.transport) for r in closed})
    systems = sorted({(_who(r), r.workers if r.system == "gateway" else 1) for r in closed},
                     key=lambda s: (list(_COLOURS).index(s[0]) if s[0] in _COLOURS else 9, s[1]))
    width = 0.8 / max(1, len(systems))
    for i, (who, workers) in enumerate(systems):
        xs, heights, cores = [], [], []
        for g, (signal, transport) in enumerate(groups):
            rs = [r for r in closed if (r.signal, r.transport) == (signal, transport) and _who(r) == who
                  and (r.workers if r.system == "gateway" else 1) == workers]
            if rs:
                xs.append(g + (i - (len(systems) - 1) / 2) * width)
                heights.append(statistics.fmean(r.items_per_s for r in rs) / 1000)
                cores.append(statistics.fmean(r.cpu_s / r.duration_s if r.duration_s else 0.0 for r in rs))
        label = f"{who} w{workers}" if who in ("gateway", "embedded") and workers != 1 else who
        bars = ax.bar(xs, heights, width, color=_COLOURS.get(who, "grey"), label=label,
                      alpha=1.0 if workers == 1 else 0.6)
        for bar, c in zip(bars, cores, strict=True):
            ax.annotate(f"{bar.get_height():,.0f}k\n{c:.2f}c", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(groups)), [f"{s}/{t}" for s, t in groups], fontsize=8)
    ax.set_ylabel("thousand items/s (closed loop); c = cores used")
    ax.set_title("Throughput at saturation", fontsize=10)
    ax.margins(y=0.2)
    if systems:
        ax.legend(fontsize=7)


def _group_open(rounds: Iterable[RoundResult]) -> dict[tuple[str, int], list[RoundResult]]:
    out: dict[tuple[str, int], list[RoundResult]] = {}
    for r in rounds:
        out.setdefault((_who(r), r.workers if r.system == "gateway" else 0), []).append(r)
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
                     "bound": v.bound, "ok": v.ok, "ratio": v.ratio, "detail": v.detail} for v in verdicts],
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
