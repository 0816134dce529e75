"""``telemetry-gateway bench sinks``: drain a pre-filled topic through each sink and measure it.

For every scenario (a sink target and a worker count) the run creates fresh topics, fills the
target's signal with a fixed number of one fresh tenant's records spread over all partitions
(``bench.sinks_data``), starts the drainers (``telemetry-gateway pipelines --sink X`` N times in
one consumer group, or Jaeger v2's own Kafka -> Elasticsearch writer) and follows their progress
until everything is written:

- our workers: the group's committed offsets (a worker commits only after the store
  acknowledged), in items (every message of a fill carries the same number);
- Jaeger's writer: the span documents in its own indices (its receiver commits before the
  store has the data, so only the store tells).

The measured window opens at the first progress (so process start-up and the group's first
join are left out) and closes when the last item is in; it yields items/s, items per CPU-second
of the drainer processes (``/proc`` of their whole trees) and of the store's own process
(Elasticsearch, Prometheus as ``stack/up`` started them), and how busy the whole machine was.
Other people's work on the same store and machine shows in these figures: repeat a run when a
difference matters. Results go to ``bench-results/<stamp>-sinks/`` as JSON, Markdown and PNG.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.kafka_count import create_topics, delete_topics
from bench.procstat import TreeMonitor
from bench.progress import ProgressLine
from bench.sinks_data import Fill, Message, build_messages, produce, restamp, tenant_name
from bench.sinks_procs import (
    ES_URL,
    PROMETHEUS_WRITE_URL,
    Drainer,
    es_count,
    es_delete,
    jaeger_config,
    jaeger_writer,
    pipelines_worker,
    stack_pid,
)
from otlp.signals import Signal

MIB = 1024.0
STORE_URLS = {"elasticsearch": ES_URL, "prometheus": PROMETHEUS_WRITE_URL}
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Target:
    """One kind of drain: who drains (a ``pipelines`` sink name, or ``jaeger``), which signal, which store."""

    name: str
    drainer: str
    signal: Signal
    store: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("es-spans", "elasticsearch", Signal.TRACES, "elasticsearch"),
        Target("jaeger-es", "jaeger", Signal.TRACES, "elasticsearch"),
        Target("es-logs", "elasticsearch", Signal.LOGS, "elasticsearch"),
        Target("prometheus", "prometheus", Signal.METRICS, "prometheus"),
    )
}


@dataclass(frozen=True, slots=True)
class Scenario:
    target: Target
    workers: int  # pipelines processes in one group; Jaeger: bulk workers of its one process

    @property
    def name(self) -> str:
        return f"{self.target.name}-w{self.workers}"


def plan(targets: Sequence[str], workers: Sequence[int]) -> list[Scenario]:
    """Every target with every worker count, in the order given (Jaeger: its default, 1 bulk worker)."""
    out: list[Scenario] = []
    for name in targets:
        if name not in TARGETS:
            raise ValueError(f"unknown sink target {name!r}; known: {', '.join(TARGETS)}")
        target = TARGETS[name]
        counts = [1] if target.drainer == "jaeger" else list(workers)
        out.extend(Scenario(target, w) for w in counts)
    return out


@dataclass
class DrainResult:
    """One scenario's drain. Rates are over the measured window; ``complete``: every item got in."""

    scenario: str
    target: str
    drainer: str
    signal: str
    store: str
    workers: int
    messages: int
    items: int
    window_s: float
    window_items: int
    items_per_s: float
    drainer_cpu_s: float
    items_per_cpu_s: float
    store_cpu_s: float
    items_per_store_cpu_s: float
    machine_busy_cores: float
    drainer_peak_rss_mib: float
    stored: int | None
    complete: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class RunSpec:
    """What a run asks for; defaults make one run take a few minutes on a 2-core machine."""

    outdir: Path
    run_id: str
    bootstrap: str = "127.0.0.1:9092"
    jaeger_bin: Path = field(default_factory=Path)
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    workers: list[int] = field(default_factory=lambda: [1, 2])
    messages: int = 400
    metrics_messages: int = 2000  # remote write drains metrics far faster: more, for a measurable window
    items: int = 500
    partitions: int = 6
    timeout_s: float = 180.0
    keep: bool = False
    quiet: bool = False
    worker_tree: Path | None = None

    def count(self, signal: Signal) -> int:
        """Messages to fill for ``signal``."""
        return self.metrics_messages if signal is Signal.METRICS else self.messages


def _rate(n: float, d: float) -> float:
    return n / d if d > 0 else 0.0


class _Progress:
    """Items a scenario's drainers have finished: committed offsets, or Jaeger's stored spans."""

    def __init__(
        self, spec: RunSpec, scenario: Scenario, topic: str, group: str, per_message: int, jaeger_pattern: str
    ) -> None:
        self._spec, self._scenario, self._topic, self._group = spec, scenario, topic, group
        self._per_message, self._jaeger_pattern = per_message, jaeger_pattern
        self._admin: Any = None

    async def __aenter__(self) -> _Progress:
        from aiokafka.admin import AIOKafkaAdminClient

        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._spec.bootstrap)
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def joined(self) -> bool:
        """Whether the group is stable with members: its partitions are handed out."""
        (resp,) = await self._admin.describe_consumer_groups([self._group])
        groups = resp.to_object()["groups"]
        return bool(groups) and groups[0]["state"] == "Stable" and bool(groups[0]["members"])

    async def items(self) -> int:
        if self._scenario.target.drainer == "jaeger":
            return await asyncio.to_thread(es_count, self._jaeger_pattern)
        offsets = await self._admin.list_consumer_group_offsets(self._group)
        done = sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == self._topic)
        return int(done) * self._per_message


async def run_scenario(
    spec: RunSpec, scenario: Scenario, index: int, messages: Sequence[Message], line: ProgressLine | None
) -> DrainResult:
    """Fill, drain, measure and clean up one scenario."""
    target = scenario.target
    prefix = f"bsk{spec.run_id}{index}_"
    tenant = tenant_name(random.getrandbits(32))
    topic = target.signal.topic(prefix)
    fill = Fill(target.signal, tenant, restamp(messages, tenant))
    total = fill.items
    workdir = spec.outdir / scenario.name
    jaeger_prefix = prefix.rstrip("_")
    notes: list[str] = []

    def say(text: str) -> None:
        if line is not None:
            line.note(f"{scenario.name}: {text}")

    say(f"filling {topic} with {len(fill.messages):,} messages ({total:,} {target.signal.value} items)")
    await create_topics(spec.bootstrap, [topic], spec.partitions)
    await produce(spec.bootstrap, topic, fill)

    drainers: list[Drainer] = []
    if target.drainer == "jaeger":
        group = prefix + "jaeger"
        cfg = jaeger_config(
            bootstrap=spec.bootstrap,
            topic=topic,
            group=group,
            index_prefix=jaeger_prefix,
            es_url=ES_URL,
            bulk_workers=scenario.workers,
        )
        drainers.append(jaeger_writer(spec.jaeger_bin, workdir, cfg))
    else:
        group = prefix + target.drainer
        drainers.extend(
            pipelines_worker(target.drainer, i, spec.bootstrap, prefix, workdir, spec.worker_tree)
            for i in range(scenario.workers)
        )
    monitors = [TreeMonitor(d.pid) for d in drainers]
    store_pid = stack_pid(target.store, urllib.parse.urlsplit(STORE_URLS[target.store]).port or 80)
    store = TreeMonitor(store_pid) if store_pid is not None else None
    if store is None:
        notes.append(f"{target.store} process not found: no store CPU")

    started = time.monotonic()
    t0 = t1 = 0.0
    done = at_start = 0
    try:
        async with _Progress(
            spec, scenario, topic, group, fill.messages[0].items, f"{jaeger_prefix}-jaeger-span-*"
        ) as progress:
            while True:
                for d in drainers:
                    d.check()
                done = await progress.items()
                now = time.monotonic()
                for m in monitors:
                    m.sample()
                if not t0 and await progress.joined():
                    # The window opens once the group has handed out its partitions: start-up
                    # (imports, the store's templates) and the join stay out of it. Drainers started
                    # together land in the first assignment (the broker waits for late joiners,
                    # group.initial.rebalance.delay.ms); one that starts later costs a rebalance.
                    t0, at_start = now, done
                    for m in [*monitors, *([store] if store else [])]:
                        m.window("start")
                if done >= total and t0:
                    break
                if now - started > spec.timeout_s:
                    notes.append(f"timed out after {spec.timeout_s:.0f}s with {done:,} of {total:,} items in")
                    break
                rate = _rate(done - at_start, now - t0) if t0 else 0.0
                say(f"{done:,}/{total:,} items  {rate:,.0f}/s  {now - started:5.1f}s")
                await asyncio.sleep(_POLL_S)
            t1 = time.monotonic()
            for m in [*monitors, *([store] if store else [])]:
                m.window("end")
    finally:
        for d in drainers:
            if d.stop() is None:
                notes.append(f"{d.name} did not stop within 20s on SIGTERM")
    stored = await asyncio.to_thread(_stored, target, tenant, jaeger_prefix, spec.partitions, spec.items)
    if not spec.keep:
        await _clean(spec, target, prefix, tenant, jaeger_prefix)

    if not t0:
        notes.append("written before the group was seen stable: no measured window (fill more)")
    window_items = done - at_start if t0 else 0
    window_s = t1 - t0 if t0 else 0.0
    cpu = sum(m.cpu_s for m in monitors)
    store_cpu = store.cpu_s if store else 0.0
    result = DrainResult(
        scenario=scenario.name,
        target=target.name,
        drainer=target.drainer,
        signal=target.signal.value,
        store=target.store,
        workers=scenario.workers,
        messages=len(fill.messages),
        items=total,
        window_s=round(window_s, 3),
        window_items=window_items,
        items_per_s=round(_rate(window_items, window_s), 1),
        drainer_cpu_s=round(cpu, 2),
        items_per_cpu_s=round(_rate(window_items, cpu), 1),
        store_cpu_s=round(store_cpu, 2),
        items_per_store_cpu_s=round(_rate(window_items, store_cpu), 1),
        machine_busy_cores=round(monitors[0].machine_busy_cores, 2),
        drainer_peak_rss_mib=round(sum(m.peak_rss_kib for m in monitors) / MIB, 1),
        stored=stored,
        complete=done >= total,
        notes=notes,
    )
    if line is not None:
        line.finish(
            f"{scenario.name}: {result.items_per_s:,.0f} items/s, {result.items_per_cpu_s:,.0f} "
            f"items/CPU-s ({target.drainer}), store {result.store_cpu_s:.1f} CPU-s"
            + ("" if result.complete else "  INCOMPLETE")
        )
    return result


def _stored(target: Target, tenant: str, jaeger_prefix: str, partitions: int, per_message: int) -> int | None:
    """What the store holds for the scenario: ES documents, or Prometheus series of the tenant."""
    if target.drainer == "jaeger":
        return es_count(f"{jaeger_prefix}-jaeger-span-*", refresh=True)
    if target.store == "elasticsearch":
        return es_count(_our_indices(target.signal, tenant), refresh=True)
    query = urllib.parse.urlencode({"query": f'count({{tenant="{tenant}"}})'})
    url = os.environ.get("TG_STACK_PROMETHEUS", "http://127.0.0.1:9090") + "/api/v1/query?" + query
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            data = json.loads(resp.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return int(float(data[0]["value"][1])) if data else 0


def _our_indices(signal: Signal, tenant: str) -> str:
    """The tenant's streams of ``signal`` in Elasticsearch, by a pattern rather than the name
    ``pipelines.convert.es_docs`` gives now: the workers may run another revision
    (``--worker-tree``) that names them otherwise. The tenant's hex digits are unique to the run."""
    kind = "traces" if signal is Signal.TRACES else "logs"
    return f"{kind}-*{tenant.rsplit('-', 1)[-1]}"


async def _clean(spec: RunSpec, target: Target, prefix: str, tenant: str, jaeger_prefix: str) -> None:
    topics = [s.topic(prefix) for s in Signal] + [prefix + "dead_letter"]
    await delete_topics(spec.bootstrap, topics)
    if target.store == "elasticsearch":
        pattern = (
            f"{jaeger_prefix}-jaeger-*" if target.drainer == "jaeger" else _our_indices(target.signal, tenant)
        )
        await asyncio.to_thread(es_delete, pattern)


async def run(spec: RunSpec, scenarios: Sequence[Scenario]) -> list[DrainResult]:
    """Build each signal's messages once, then run the scenarios one after the other."""
    line = None if spec.quiet else ProgressLine("sinks")
    built: dict[Signal, list[Message]] = {}
    results: list[DrainResult] = []
    for i, sc in enumerate(scenarios):
        sig = sc.target.signal
        if sig not in built:
            if line is not None:
                line.note(f"building {spec.count(sig):,} {sig.value} messages of {spec.items} items")
            built[sig] = await asyncio.to_thread(
                build_messages, sig, spec.count(sig), spec.items, spec.partitions
            )
        results.append(await run_scenario(spec, sc, i, built[sig], line))
    return results


# -- the report ---------------------------------------------------------------------------------------


def _baseline(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    data = json.loads(path.read_text())
    return {r["scenario"]: r for r in data.get("results", [])}


def markdown(
    results: Sequence[DrainResult], meta: dict[str, Any], baseline: dict[str, dict[str, Any]]
) -> str:
    """The report's table; with a baseline, its items/s and items/CPU-s and the ratios beside."""
    out = [
        "# bench sinks",
        "",
        f"git {meta['git']} (workers from {meta['workers_from']}), {meta['cpus']} CPUs, {meta['fill']}; "
        f"started {meta['started']}.",
        "Rates over the window from the first look that found the drainers' consumer group stable "
        "(partitions assigned) to the first that found everything written (looks every 0.1 s; "
        "Jaeger's end through Elasticsearch's 1 s refresh). CPU of the "
        "drainer processes' trees and of the store's process, from /proc. The machine is shared: "
        "figures are noisy.",
        "",
    ]
    head = [
        "scenario",
        "drainer",
        "workers",
        "items",
        "window s",
        "items/s",
        "drainer CPU s",
        "items/CPU-s",
        "store CPU s",
        "items/store CPU-s",
        "busy cores",
        "stored",
    ]
    if baseline:
        head += ["before items/s", "x", "before items/CPU-s", "x"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [
            r.scenario,
            r.drainer,
            str(r.workers),
            f"{r.items:,}",
            f"{r.window_s:.1f}",
            f"{r.items_per_s:,.0f}",
            f"{r.drainer_cpu_s:.1f}",
            f"{r.items_per_cpu_s:,.0f}",
            f"{r.store_cpu_s:.1f}",
            f"{r.items_per_store_cpu_s:,.0f}",
            f"{r.machine_busy_cores:.2f}",
            "?" if r.stored is None else f"{r.stored:,}" + ("" if r.complete else " INCOMPLETE"),
        ]
        if baseline:
            b = baseline.get(r.scenario)
            if b:
                row += [
                    f"{b['items_per_s']:,.0f}",
                    f"{_rate(r.items_per_s, b['items_per_s']):.2f}",
                    f"{b['items_per_cpu_s']:,.0f}",
                    f"{_rate(r.items_per_cpu_s, b['items_per_cpu_s']):.2f}",
                ]
            else:
                row += ["", "", "", ""]
        out.append("| " + " | ".join(row) + " |")
    notes = [f"- {r.scenario}: {n}" for r in results for n in r.notes]
    if notes:
        out += ["", "Notes:", *notes]
    out += [
        "",
        "`stored`: documents in the scenario's index (Elasticsearch) or series of its tenant (Prometheus).",
    ]
    return "\n".join(out) + "\n"


def plot(results: Sequence[DrainResult], path: Path) -> bool:
    """Items/s and items per drainer CPU-second per scenario, side by side; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.scenario for r in results]
    for ax, key, title in (
        (axes[0], "items_per_s", "items/s"),
        (axes[1], "items_per_cpu_s", "items per drainer CPU-s"),
    ):
        ax.barh(names, [getattr(r, key) for r in results], color="#4477aa")
        ax.set_title(title)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(
    outdir: Path, results: Sequence[DrainResult], meta: dict[str, Any], baseline: dict[str, dict[str, Any]]
) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / "sinks.json", "markdown": outdir / "sinks.md"}
    paths["json"].write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    paths["markdown"].write_text(markdown(results, meta, baseline))
    if plot(results, outdir / "sinks.png"):
        paths["png"] = outdir / "sinks.png"
    return paths


def main(spec: RunSpec, baseline: Path | None, git_rev: Callable[[], str]) -> int:
    """Run every scenario, write the report, print it; 1 if a drain did not complete, 2 on a failed start."""
    from aiokafka.errors import KafkaError

    from bench.systems import StartError

    started = dt.datetime.now(dt.UTC)
    try:
        scenarios = plan(spec.targets, spec.workers)
        results = asyncio.run(run(spec, scenarios))
    except (StartError, ValueError, OSError, KafkaError) as exc:
        print(f"\nbench sinks: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "git": git_rev(),
        # An exported tree is named for its revision; its name, not its place on this machine.
        "workers_from": spec.worker_tree.name if spec.worker_tree else "this tree",
        "cpus": os.cpu_count(),
        "fill": f"{spec.messages:,} messages ({spec.metrics_messages:,} of metrics) x {spec.items} items, "
        f"{spec.partitions} partitions, one tenant",
    }
    paths = write_report(spec.outdir, results, meta, _baseline(baseline))
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    incomplete = [r.scenario for r in results if not r.complete]
    if incomplete:
        print(f"INCOMPLETE DRAIN: {', '.join(incomplete)}", file=sys.stderr)
    return 1 if incomplete else 0
