"""``telemetry-gateway bench``: size replicas and catch regressions with one command.

``run`` measures one system under one load; ``compare`` runs the gateway (1 and 2 workers)
and the OpenTelemetry Collector side by side, closed loop for throughput and open loop for
latency vs offered load, and writes JSON, Markdown and a plot to ``bench-results/<timestamp>/``;
``micro`` runs the pytest-benchmark suites of the hot functions. A missed target or a failed
loss check makes the command exit 1 and says which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

from aiokafka.errors import KafkaError

from bench.loadgen import LoadSpec
from bench.payloads import PayloadShape
from bench.report import write_all
from bench.results import RoundResult, aggregate
from bench.runner import (
    Environment,
    RoundPlan,
    SystemName,
    compare_plan,
    open_plan,
    run_plans,
)
from bench.sinks_cli import add_sinks_arguments, sinks_main
from bench.systems import (
    DURABLE_COLLECTOR_CONFIG,
    REPO_ROOT,
    StartError,
    base_collector_config_path,
    default_jaeger_bin,
)
from bench.targets import (
    NO_TARGETS,
    TARGETS_PATH,
    Targets,
    TargetsError,
    evaluate,
    gaps_to_collector,
    load_targets,
)
from otlp.signals import Signal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True)
    run = sub.add_parser("run", help="one system under one load")
    _common(run)
    run.add_argument("--system", choices=["gateway", "collector", "collector-durable"], default="gateway",
                     help="collector-durable: bench/collector-otlp-kafka-durable.yaml (acks after Kafka)")
    run.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    run.add_argument("--mode", choices=["closed", "open"], default="closed")
    run.add_argument("--rate", type=float, default=0.0, help="open loop: offered items per second")
    run.add_argument("--tls", choices=["off", "on", "both"], default="off",
                     help="gateway receivers over TLS (a throwaway CA and certificate); both: a plaintext "
                          "round, then a TLS round, for the cost of TLS side by side")
    cmp_ = sub.add_parser("compare", help="gateway vs the Collector (default and durable), every signal, "
                                           "saturation and open-loop loads, plus the embedded default")
    _common(cmp_)
    # Shorter windows than `run`: the whole default matrix (about 50 rounds) stays near 10 minutes.
    cmp_.set_defaults(signal=None, transport=None, warmup=1.5, duration=5.0)
    cmp_.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                      help="signal/transport pairs to run, comma-separated (default "
                           f"{DEFAULT_SCENARIOS}); --signal/--transport pick a single one instead")
    cmp_.add_argument("--workers", default="1",
                      help="gateway worker counts at saturation (e.g. 1,2; default 1)")
    cmp_.add_argument("--loads", default="10,25,50",
                      help="open-loop offered loads, %% of the gateway's 1-worker max of the same scenario "
                           "measured earlier in the run (default 10,25,50)")
    cmp_.add_argument("--collectors", default="default,durable",
                      help="Collector configurations to run beside the gateway: default "
                           "(--collector-config), durable (bench/collector-otlp-kafka-durable.yaml), none")
    cmp_.add_argument("--no-collector", action="store_true", help="gateway rounds only (--collectors none)")
    cmp_.add_argument("--no-embedded", action="store_true",
                      help="skip the embedded default (memory bus -> file sink) at saturation")
    cmp_.add_argument("--repeat", type=int, default=1,
                      help="closed-loop rounds per system and worker count, alternating; medians reported")
    sinks = sub.add_parser("sinks", help="drain pre-filled topics through each sink (and Jaeger's ES writer)")
    add_sinks_arguments(sinks)
    micro = sub.add_parser("micro", help="pytest-benchmark suites of the hot functions")
    micro.add_argument("pytest_args", nargs=argparse.REMAINDER,
                       help="extra pytest arguments, after `--` (e.g. `bench micro -- -q`)")


Transport = Literal["grpc", "http"]
DEFAULT_SCENARIOS = "traces/grpc,traces/http,logs/grpc,metrics/grpc"
_COLLECTOR_CHOICES: dict[str, SystemName] = {"default": "collector", "durable": "collector-durable"}


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("--transport", choices=["grpc", "http"], default="grpc")
    g.add_argument("--signal", choices=[s.value for s in Signal], default=Signal.TRACES.value)
    g.add_argument("--items", type=int, default=512, help="spans / log records / data points per request")
    g.add_argument("--attributes", type=int, default=10, help="attributes per span / log record")
    g.add_argument("--resources", type=int, default=1, help="resources (services) per request")
    g.add_argument("--concurrency", type=int, default=16, help="in-flight requests per generator process")
    g.add_argument("--processes", type=int, default=1, help="load generator processes")
    g.add_argument("--connections", type=int, default=4, help="connections per generator process")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    g.add_argument("--duration", type=float, default=8.0, help="measured seconds per round")
    g.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    g.add_argument("--http-client", choices=["auto", "aiohttp", "raw"], default="auto")
    s = p.add_argument_group("systems")
    s.add_argument("--bus", choices=["kafka", "memory"], default="kafka",
                   help="gateway bus; the Collector always writes to Kafka")
    s.add_argument("--bootstrap", default=os.environ.get("TG_STACK_KAFKA", "127.0.0.1:9092"))
    s.add_argument("--jaeger-bin", type=Path, default=None, help="the Collector peer (Jaeger v2 binary)")
    s.add_argument("--collector-config", type=Path, default=None,
                   help="base Collector config (default: bench/collector-otlp-kafka.yaml; "
                        "bench/collector-otlp-kafka-durable.yaml acks after Kafka like the gateway)")
    s.add_argument("--keep-topics", action="store_true",
                   help="leave each round's Kafka topics (memory bus: its file sink output) in place")
    s.add_argument("--gateway-env", action="append", default=[], metavar="TG_KEY=VALUE",
                   help="extra gateway configuration override, e.g. TG_BATCH__MAX_AGE_MS=5 (repeatable)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("bench-results"), help="results root directory")
    o.add_argument("--targets", type=Path, default=TARGETS_PATH)
    o.add_argument("--no-targets", action="store_true", help="report figures, judge nothing")
    o.add_argument("--quiet", action="store_true", help="no live progress line")


def _load_spec(ns: argparse.Namespace) -> LoadSpec:
    return LoadSpec(
        grpc_target="", http_url="", transport=ns.transport or "grpc", signal=Signal(ns.signal or "traces"),
        shape=PayloadShape(items=ns.items, attributes=ns.attributes, resources=ns.resources),
        concurrency=ns.concurrency, warmup_s=ns.warmup, duration_s=ns.duration, processes=ns.processes,
        connections=ns.connections, timeout_s=ns.timeout, http_client=ns.http_client)


def _tls_files(directory: Path) -> tuple[str, dict[str, str]]:
    """A throwaway CA and server certificate for 127.0.0.1 (trustme, a dev dependency): the CA
    file for the generator and the gateway's ``server.tls`` overrides."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError("--tls needs trustme: pip install -e '.[dev]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return str(ca_file), {"TG_SERVER__TLS__CERT_FILE": str(cert), "TG_SERVER__TLS__KEY_FILE": str(key)}


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5, check=False).stdout.strip() or "?"
    except OSError:
        return "?"


def main(ns: argparse.Namespace) -> int:
    if ns.bench_command == "micro":
        return _micro([a for a in ns.pytest_args if a != "--"])
    if ns.bench_command == "sinks":
        return sinks_main(ns, _git_rev)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    env = Environment(outdir=ns.out / stamp, run_id=stamp.lower(), bus=ns.bus, bootstrap=ns.bootstrap,
                      jaeger_bin=ns.jaeger_bin or default_jaeger_bin(), collector_config=ns.collector_config,
                      keep_topics=ns.keep_topics, quiet=ns.quiet,
                      gateway_env=dict(kv.split("=", 1) for kv in ns.gateway_env if "=" in kv))
    try:
        targets = NO_TARGETS if ns.no_targets else load_targets(ns.targets)
    except (OSError, TargetsError) as exc:
        print(f"bench: cannot read targets: {exc}", file=sys.stderr)
        return 2
    base = _load_spec(ns)
    results: list[RoundResult] = []
    try:
        if ns.bench_command == "run":
            if ns.mode == "open" and ns.rate <= 0:
                print("bench: --mode open needs --rate (offered items per second)", file=sys.stderr)
                return 2
            spec = replace(base, mode=ns.mode, rate=ns.rate)
            if ns.tls != "off" and ns.system != "gateway":
                print("bench: --tls is for --system gateway", file=sys.stderr)
                return 2
            plans = [RoundPlan(ns.system, ns.workers, spec)] if ns.tls != "on" else []
            if ns.tls != "off":
                ca_file, tls_env = _tls_files(env.outdir / "tls")
                plans.append(RoundPlan(ns.system, ns.workers, replace(spec, tls_ca_file=ca_file),
                                       gateway_env=tls_env))
            results = run_plans(env, plans)
        else:
            plan_args = _compare_args(ns)
            if isinstance(plan_args, str):
                print(f"bench: {plan_args}", file=sys.stderr)
                return 2
            results = run_compare(env, base, *plan_args, repeat=ns.repeat)
    except (StartError, RuntimeError, OSError, KafkaError) as exc:
        # A system that would not start, a generator that could not connect, Kafka not there:
        # the run says what and stops, with everything it started already stopped.
        print(f"\nbench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return finish_run(ns, env, started, results, targets, base)


def _compare_args(ns: argparse.Namespace) -> tuple[list[tuple[Signal, Transport]], list[int], list[int],
                                                   list[SystemName], bool] | str:
    """``compare``'s flags as (scenarios, workers, loads, collectors, embedded), or what is wrong."""
    try:
        if ns.signal or ns.transport:
            scenarios = [parse_scenario(f"{ns.signal or 'traces'}/{ns.transport or 'grpc'}")]
        else:
            scenarios = [parse_scenario(x) for x in ns.scenarios.split(",") if x.strip()]
        workers = [int(w) for w in ns.workers.split(",") if w.strip()]
        loads = [int(x) for x in ns.loads.split(",") if x.strip()]
        names = [] if ns.no_collector else [x.strip() for x in ns.collectors.split(",") if x.strip()]
        collectors = [_COLLECTOR_CHOICES[n] for n in names if n != "none"]
    except (ValueError, KeyError) as exc:
        return f"bad compare argument: {exc}"
    if not scenarios or not workers:
        return "compare needs at least one scenario and one worker count"
    if collectors and ns.bus != "kafka":
        return "the comparison needs --bus kafka (the Collector writes to Kafka); or --collectors none"
    return scenarios, workers, loads, collectors, ns.bus == "kafka" and not ns.no_embedded


def parse_scenario(text: str) -> tuple[Signal, Transport]:
    """``traces/grpc`` -> (Signal.TRACES, "grpc"); ValueError for an unknown signal or transport."""
    signal, _, transport = text.strip().partition("/")
    if transport == "grpc":
        return Signal(signal), "grpc"
    if transport == "http":
        return Signal(signal), "http"
    raise ValueError(f"scenario {text.strip()!r}: transport must be grpc or http")


def run_compare(env: Environment, base: LoadSpec, scenarios: list[tuple[Signal, Transport]],
                workers: list[int], loads: list[int], collectors: list[SystemName], embedded: bool, *,
                repeat: int = 1) -> list[RoundResult]:
    """Every scenario at saturation first (gateway, each Collector, the embedded default), then
    the open-loop loads of each scenario as shares of that scenario's gateway max just measured."""
    specs = [replace(base, signal=signal, transport=transport) for signal, transport in scenarios]
    closed = [p for spec in specs
              for p in compare_plan(spec, workers, collectors=collectors, repeat=repeat, embedded=embedded)]
    total = len(closed) + len(specs) * len(loads) * (1 + len(collectors))
    results = run_plans(env, closed, total=total)
    summary = aggregate(results)
    for spec in specs:
        gw1 = next((r for r in summary if r.system == "gateway" and r.bus == env.bus and r.mode == "closed"
                    and r.workers == workers[0]
                    and (r.signal, r.transport) == (spec.signal.value, spec.transport)), None)
        if gw1 is None or gw1.items_per_s <= 0 or not loads:
            continue
        plans = open_plan(spec, gw1.items_per_s, loads, collectors=collectors)
        results += run_plans(env, plans, first_index=len(results), total=total)
    return results


def finish_run(ns: argparse.Namespace, env: Environment, started: dt.datetime, results: list[RoundResult],
               targets: Targets, base: LoadSpec) -> int:
    """Judge, write the report, print the table and every failure; 1 if a target or loss check failed."""
    summary = aggregate(results)
    verdicts = evaluate(targets, summary)
    gaps = gaps_to_collector(targets, summary)
    scenarios = list(dict.fromkeys(f"{r.signal}/{r.transport}" for r in results))  # in the order run
    meta = {
        "started": started.isoformat(timespec="seconds"), "command": ns.bench_command, "cpus": os.cpu_count(),
        "git": _git_rev(), "bus": env.bus, "gateway_env": env.gateway_env,
        "generator": f"{base.processes} process(es) x {base.concurrency} in flight (closed loop), "
                     f"{', '.join(scenarios) or f'{base.signal.value}/{base.transport}'}, "
                     f"{base.shape.items} items/request, warm-up {base.warmup_s:g}s, "
                     f"measured {base.duration_s:g}s",
        "collector_config": _shown(env.collector_config or base_collector_config_path()),
        "durable_collector_config": _shown(DURABLE_COLLECTOR_CONFIG),
        "scenarios": scenarios,
    }
    paths = write_all(env.outdir, summary, verdicts, meta, gaps, rounds=results)
    print((env.outdir / "report.md").read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    failed = False
    for r in results:
        if not r.loss_ok:
            failed = True
            print(f"LOSS CHECK FAILED: {r.scenario} ({r.system}): acknowledged {r.acked_items:,} items, "
                  f"Kafka holds {r.delivered_items:,}", file=sys.stderr)
        if r.acked_items == 0:
            failed = True
            print(f"NO DATA: {r.scenario} ({r.system}) acknowledged nothing; errors {r.errors}",
                  file=sys.stderr)
    for v in verdicts:
        if not v.ok:
            failed = True
            print(f"TARGET MISSED: {v.describe()}", file=sys.stderr)
    return 1 if failed else 0


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it (no machine paths)."""
    full = path.resolve()
    return str(full.relative_to(REPO_ROOT)) if full.is_relative_to(REPO_ROOT) else path.name


def _micro(extra: list[str]) -> int:
    """The hot functions' pytest-benchmark suites, through the same entry point as the load runs."""
    args = [sys.executable, "-m", "pytest", "tests", "-k", "bench and not bench_harness and not bench_smoke",
            "--benchmark-enable", "--benchmark-only", *extra]
    return subprocess.call(args, cwd=REPO_ROOT)
