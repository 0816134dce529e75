"""``bench sinks``: its arguments, and the run they describe (``bench.sinks``)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

from bench.sinks import TARGETS, RunSpec, main
from bench.systems import default_jaeger_bin


def add_sinks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sinks",
        default=",".join(TARGETS),
        help=f"what to drain through, in order (default: all of {', '.join(TARGETS)})",
    )
    p.add_argument("--workers", default="1,2", help="pipelines processes in one consumer group (default 1,2)")
    p.add_argument("--messages", type=int, default=400, help="Kafka messages per scenario (default 400)")
    p.add_argument("--metrics-messages", type=int, default=2000,
                   help="Kafka messages per remote-write scenario (default 2000: it drains fastest)")
    p.add_argument(
        "--items", type=int, default=500, help="spans / log records / data points per message (default 500)"
    )
    p.add_argument("--partitions", type=int, default=6, help="partitions of each fresh topic (default 6)")
    p.add_argument("--timeout", type=float, default=180.0, help="longest drain per scenario, seconds")
    p.add_argument("--bootstrap", default=os.environ.get("TG_STACK_KAFKA", "127.0.0.1:9092"))
    p.add_argument("--jaeger-bin", type=Path, default=None, help="Jaeger v2 binary (default: the stack's)")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an earlier run's sinks.json: its figures and the ratios beside this run's",
    )
    p.add_argument(
        "--worker-tree",
        type=Path,
        default=None,
        help="run the pipelines workers from this source tree (e.g. `git archive` of a revision)",
    )
    p.add_argument("--keep", action="store_true", help="leave topics and indices in place")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results root directory")
    p.add_argument("--quiet", action="store_true", help="no live progress line")


def sinks_main(ns: argparse.Namespace, git_rev: Callable[[], str]) -> int:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    spec = RunSpec(
        outdir=ns.out / f"{stamp}-sinks",
        run_id=stamp.lower(),
        bootstrap=ns.bootstrap,
        jaeger_bin=ns.jaeger_bin or default_jaeger_bin(),
        targets=[t.strip() for t in ns.sinks.split(",") if t.strip()],
        workers=[int(w) for w in ns.workers.split(",") if w.strip()],
        messages=ns.messages,
        metrics_messages=ns.metrics_messages,
        items=ns.items,
        partitions=ns.partitions,
        timeout_s=ns.timeout,
        keep=ns.keep,
        quiet=ns.quiet,
        worker_tree=ns.worker_tree,
    )
    return main(spec, ns.baseline, git_rev)
