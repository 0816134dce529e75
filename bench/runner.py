"""One benchmark round, and the side-by-side plan that alternates gateway and Collector rounds.

Every round starts its system fresh, on its own topic prefix, so peak RSS and the loss check
belong to that round alone; rounds of the two systems alternate so a drift of the machine
(page cache, broker compaction, thermal) hits both alike rather than one block of rounds.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bench.kafka_count import count_delivered, create_topics, delete_topics, topics_for
from bench.loadgen import LoadSpec, Tick, WorkerTotals, run_load
from bench.procstat import TreeMonitor
from bench.progress import ProgressLine
from bench.results import RoundResult, scenario_name
from bench.systems import DURABLE_COLLECTOR_CONFIG, CollectorSystem, GatewaySystem, SinkCounter
from otlp.signals import Signal

MIB = 1024.0
SINK_DRAIN_LIMIT_S = 60.0  # memory bus: how long the file sink may take to write what was acknowledged
# No file sink write for this long means it has written what it had: its in-process bus holds
# at most ~16 MiB, well under a second of its work.
SINK_QUIET_S = 1.0

SystemName = Literal["gateway", "collector", "collector-durable"]
COLLECTORS: tuple[SystemName, ...] = ("collector", "collector-durable")


@dataclass
class RoundPlan:
    """One round: which system, how many gateway workers, what load (offered load if open loop).

    ``collector`` runs the base Collector config (``bench/collector-otlp-kafka.yaml`` unless the
    run names another); ``collector-durable`` runs ``bench/collector-otlp-kafka-durable.yaml``,
    which answers only after Kafka has the data, as the gateway does.
    """

    system: SystemName
    workers: int
    load: LoadSpec
    load_pct: int | None = None  # open loop, as a share of the gateway's closed-loop max
    gateway_env: dict[str, str] = field(default_factory=dict)  # this round's own overrides (TLS)
    bus: str | None = None  # the gateway's bus for this round; None: the run's (the embedded default: memory)


@dataclass
class Environment:
    """What every round shares: where Kafka and the Collector binary are, where to write."""

    outdir: Path
    run_id: str
    bus: str = "kafka"
    bootstrap: str = "127.0.0.1:9092"
    jaeger_bin: Path = field(default_factory=Path)
    collector_config: Path | None = None
    partitions: int = 6
    keep_topics: bool = False
    gateway_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False


def round_bus(env: Environment, plan: RoundPlan) -> str:
    """The bus a round's system publishes to: the Collector always writes to Kafka."""
    if plan.system != "gateway":
        return "kafka"
    return plan.bus or env.bus


def run_round(env: Environment, plan: RoundPlan, index: int, total: int = 0) -> RoundResult:
    """Run one round; ``index`` of ``total`` (0: unknown) names it in the live progress line."""
    spec = plan.load
    bus = round_bus(env, plan)
    tag = {"gateway": "gw", "collector": "col", "collector-durable": "cold"}[plan.system]
    prefix = f"bench.{env.run_id}.r{index:02d}.{tag}." if bus == "kafka" else "otlp_"
    own_bus = f"-{bus}" if bus != "kafka" else ""
    workdir = env.outdir / "rounds" / f"{index:02d}-{plan.system}-w{plan.workers}{own_bus}"
    label = f"{plan.system}{f' w{plan.workers}' if plan.system == 'gateway' else ''}" \
            f"{f' {bus} bus' if bus != 'kafka' else ''} {spec.signal.value}/{spec.transport} {spec.mode}" + \
            (f" {plan.load_pct}%" if plan.load_pct is not None else "") + \
            (f" {spec.rate:,.0f}/s" if spec.mode == "open" else "")
    line = ProgressLine(f"{index + 1}/{total} {label}" if total else label)
    topics = topics_for(prefix, [spec.signal])
    if bus == "kafka":
        asyncio.run(create_topics(env.bootstrap, topics, env.partitions))
    system: GatewaySystem | CollectorSystem
    if plan.system == "gateway":
        system = GatewaySystem(workdir, workers=plan.workers, bus=bus, bootstrap=env.bootstrap,
                               topic_prefix=prefix, env={**env.gateway_env, **plan.gateway_env})
    else:
        config = DURABLE_COLLECTOR_CONFIG if plan.system == "collector-durable" else env.collector_config
        system = CollectorSystem(workdir, binary=env.jaeger_bin, bootstrap=env.bootstrap, topic_prefix=prefix,
                                 base_config=config)
    if not env.quiet:
        line.note("starting")
    system.start()
    try:
        monitor = TreeMonitor(system.pid)
        monitor.sample()
        http_url = system.http_url.replace("http://", "https://") if spec.tls_ca_file else system.http_url
        load = replace(spec, grpc_target=system.grpc_target, http_url=http_url)

        def tick(t: Tick) -> None:
            monitor.sample()
            if not env.quiet:
                line.update(t)

        totals = run_load(load, on_tick=tick, on_window=monitor.window)
        if not env.quiet:
            line.note(f"loss check: waiting for {totals.acked_items:,} items")
        delivered, drain_s = _delivered(env, bus, system, topics, totals)
        monitor.sample()
    finally:
        system.stop()
        if bus == "kafka" and not env.keep_topics:
            asyncio.run(delete_topics(env.bootstrap, topics))
        elif isinstance(system, GatewaySystem) and not env.keep_topics:
            # The embedded file sink writes about 1 GB of OTLP/JSON per saturated round: counted
            # above, then removed, or a compare run leaves gigabytes behind.
            shutil.rmtree(system.data_dir, ignore_errors=True)
    result = _result(plan, bus, load, totals, monitor, delivered, prefix)
    result.sink_drain_s = round(drain_s, 2)
    if bus != "kafka":
        result.notes.append(f"file sink: {delivered:,} of {totals.acked_items:,} acknowledged items written "
                            f"{drain_s:.1f}s after the load stopped: "
                            f"{result.delivered_items_per_s:,.0f} items/s delivered over the whole run")
    if not env.quiet:
        line.finish(f"{result.items_per_s:,.0f} items/s  "
                    f"p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
                    f"cpu {result.cpu_s:.1f}s (generator {result.generator_cores:.2f}, "
                    f"machine {result.machine_busy_cores:.2f} cores)  "
                    f"rss {result.peak_rss_mib:.0f} MiB  "
                    f"errors {sum(result.errors.values())}  "
                    f"delivered {result.delivered_items:,}/{result.acked_items:,} "
                    f"{'ok' if result.loss_ok else 'LOSS'}")
    return result


def _delivered(env: Environment, bus: str, system: GatewaySystem | CollectorSystem,
               topics: dict[str, Signal], totals: WorkerTotals) -> tuple[int, float]:
    """Items the round's system delivered, read back from its Kafka topics or from the file sink,
    and (file sink) the seconds it took after the load stopped to write the last acknowledged one."""
    if bus == "kafka":
        return asyncio.run(count_delivered(env.bootstrap, topics, expect=totals.acked_items)).items, 0.0
    assert isinstance(system, GatewaySystem)
    # The memory bus acknowledges once the item is queued; the file sink writes it later. Waiting
    # here is the sink catching up with what the window accepted: bounded, and reported. The
    # drain time is when the sink last wrote (the files' mtime), not when the count finished.
    counter = SinkCounter(system.data_dir, list(topics.values()))
    load_ended = time.time()
    deadline = time.monotonic() + SINK_DRAIN_LIMIT_S
    seen = 0
    while True:
        _wait_quiet(counter, deadline)
        seen = counter.poll()
        if seen >= totals.acked_items or time.monotonic() >= deadline:
            break
    return seen, max(0.0, counter.last_write() - load_ended)


def _wait_quiet(counter: SinkCounter, deadline: float) -> None:
    """Until no data file grew for ``SINK_QUIET_S`` (or the deadline): the sink has caught up."""
    sizes = counter.sizes()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counter.sizes()
        if now != sizes:
            sizes, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SINK_QUIET_S:
            return


def _result(plan: RoundPlan, bus: str, load: LoadSpec, totals: WorkerTotals, monitor: TreeMonitor,
            delivered: int, prefix: str) -> RoundResult:
    dur = load.duration_s
    transport = load.transport + ("+tls" if load.tls_ca_file else "")
    return RoundResult(
        scenario=scenario_name(signal=load.signal.value, transport=transport, bus=bus,
                               mode=load.mode, workers=plan.workers, load_pct=plan.load_pct),
        system=plan.system, workers=plan.workers, signal=load.signal.value, transport=transport,
        bus=bus, mode=load.mode, load_pct=plan.load_pct, warmup_s=load.warmup_s,
        offered_items_per_s=load.rate if load.mode == "open" else 0.0,
        duration_s=dur, items_per_s=totals.measured_items / dur, bytes_per_s=totals.measured_bytes / dur,
        latency_ms=totals.hist.summary_ms(), cpu_s=round(monitor.cpu_s, 3),
        peak_rss_mib=round(monitor.peak_rss_kib / MIB, 1), hwm_mib=round(monitor.peak_hwm_kib / MIB, 1),
        sent_items=totals.sent_items, acked_items=totals.acked_items, delivered_items=delivered,
        errors=dict(totals.errors), late_sends=totals.late_sends, topic_prefix=prefix,
        generator_cores=round(totals.cpu_s / (load.warmup_s + dur), 2),
        machine_busy_cores=round(monitor.machine_busy_cores, 2),
    )


def compare_plan(base: LoadSpec, workers: list[int], *, collectors: Sequence[SystemName] = COLLECTORS,
                 repeat: int = 1, embedded: bool = False) -> list[RoundPlan]:
    """Closed-loop (saturation) rounds of one load, alternating systems, ``repeat`` times.

    Order per repeat: gateway w1, each Collector, gateway w2, each Collector, ..., then (with
    ``embedded``) the gateway's 1-worker embedded default: memory bus into the file sink.
    """
    closed = replace(base, mode="closed")
    plans: list[RoundPlan] = []
    for _ in range(max(1, repeat)):
        for w in workers:
            plans.append(RoundPlan("gateway", w, closed))
            plans += [RoundPlan(c, 1, closed) for c in collectors]
        if embedded:
            plans.append(RoundPlan("gateway", 1, closed, bus="memory"))
    return plans


def open_plan(base: LoadSpec, max_items_per_s: float, load_pcts: list[int], *,
              collectors: Sequence[SystemName] = COLLECTORS) -> list[RoundPlan]:
    """Open-loop rounds at shares of the gateway's (1 worker) max, the same offered load for all.

    ``max_items_per_s`` is the gateway's closed-loop figure for this same load measured earlier
    in the run, so "25 %" means a quarter of what this build did on this machine just now.
    """
    plans: list[RoundPlan] = []
    for pct in load_pcts:
        rate = max(1.0, max_items_per_s * pct / 100.0)
        spec = replace(base, mode="open", rate=rate, concurrency=max(base.concurrency * 8, 64))
        plans.append(RoundPlan("gateway", 1, spec, load_pct=pct))
        plans += [RoundPlan(c, 1, spec, load_pct=pct) for c in collectors]
    return plans


def run_plans(env: Environment, plans: list[RoundPlan], first_index: int = 0,
              on_result: Callable[[RoundResult], None] | None = None, total: int = 0) -> list[RoundResult]:
    """Run ``plans`` in order; ``total`` rounds in the whole run (0: just these) for the progress line."""
    out = []
    for i, plan in enumerate(plans):
        r = run_round(env, plan, first_index + i, total or first_index + len(plans))
        out.append(r)
        if on_result is not None:
            on_result(r)
    return out
