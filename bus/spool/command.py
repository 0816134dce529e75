"""``telemetry-gateway spool inspect|replay|fsync-test --dir DIR``: see and drain a spool left by a dead
node, and measure what a group commit costs on a disk.

``DIR`` is a spool base directory (``spool.dir``, holding ``worker-<n>`` directories) or one
worker's directory. ``inspect`` changes nothing: per directory it lists the segments, what is
left to replay by (signal, tenant), the oldest record, and the corrupt records and torn tail a
start-up would deal with. ``replay`` locks the directories (refusing one a running gateway
holds), repairs them as a start-up would, and feeds every record to the bus of ``--config``
(Kafka) in order, deleting segments as Kafka acknowledges them; it exits 0 once all is replayed,
1 if ``--timeout`` passed first (what is left stays on disk). ``fsync-test`` appends batches
through the spool's own group commit in a scratch directory and prints the fsync latency
distribution, batches per fsync and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bus.spool import log as fmt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="spool_command", required=True)
    inspect = sub.add_parser("inspect", help="what a spool directory holds (changes nothing)")
    inspect.add_argument("--dir", required=True, type=Path, help="spool.dir, or one worker-<n> directory")
    inspect.add_argument("--json", action="store_true", help="one JSON document instead of text")
    replay = sub.add_parser("replay", help="drain a spool directory to the configured bus (Kafka)")
    replay.add_argument("--dir", required=True, type=Path, help="spool.dir, or one worker-<n> directory")
    replay.add_argument("--config", metavar="FILE", help="YAML configuration (TG_* env vars override it)")
    replay.add_argument("--timeout", type=float, default=0.0,
                        help="give up after this many seconds (0: never)")
    probe = sub.add_parser("fsync-test", help="group commits on this disk: fsync latency and throughput")
    probe.add_argument("--dir", required=True, type=Path, help="a directory on the spool's filesystem")
    probe.add_argument("--seconds", type=float, default=10.0)
    probe.add_argument("--batch-bytes", type=int, default=256 * 1024, help="payload bytes per batch")
    probe.add_argument("--concurrency", type=int, default=8, help="batches appended at once")


def spool_dirs(path: Path) -> list[Path]:
    """The worker directories under ``path`` (or ``path`` itself when it holds segments)."""
    if fmt.segments(path) or (path / fmt.LEDGER).exists():
        return [path]
    return sorted(p for p in path.glob("worker-*") if p.is_dir())


def inspect_dir(directory: Path) -> dict[str, Any]:
    rec = fmt.recover(directory, repair=False)
    by_key: Counter[str] = Counter()
    items: Counter[str] = Counter()
    oldest = newest = 0
    for info in rec.segments:
        data = info.path.read_bytes()
        for _, item in fmt.parse(data):
            if isinstance(item, fmt.Bad) or item.seq <= rec.acked:
                continue
            key = f"{item.batch.signal.value}/{item.batch.tenant}"
            by_key[key] += 1
            items[key] += item.batch.items
            oldest = min(oldest or item.appended_ms, item.appended_ms)
            newest = max(newest, item.appended_ms)
    quarantined = sorted(p.name for p in (directory / fmt.QUARANTINE).glob("*.bad")) \
        if (directory / fmt.QUARANTINE).is_dir() else []
    return {
        "dir": str(directory),
        "acked_through_seq": rec.acked,
        "next_seq": rec.next_seq,
        "segments": [{"file": s.path.name, "bytes": s.size, "records": s.records} for s in rec.segments],
        "records": rec.records,
        "bytes": rec.bytes,
        "by_signal_tenant": {k: {"records": by_key[k], "items": items[k]} for k in sorted(by_key)},
        "oldest_age_s": round(time.time() - oldest / 1000, 3) if oldest else None,
        "newest_age_s": round(time.time() - newest / 1000, 3) if newest else None,
        "corrupt_records": rec.corrupt,
        "torn_tail_bytes": rec.torn_bytes,
        "quarantined_files": quarantined,
    }


def _print_text(report: dict[str, Any]) -> None:
    print(f"{report['dir']}: {report['records']} record(s), {report['bytes']} bytes to replay; "
          f"acknowledged through seq {report['acked_through_seq']}")
    if report["oldest_age_s"] is not None:
        print(f"  oldest record {report['oldest_age_s']:.0f}s old, newest {report['newest_age_s']:.0f}s old")
    for key, v in report["by_signal_tenant"].items():
        print(f"  {key}: {v['records']} batch(es), {v['items']} item(s)")
    for s in report["segments"]:
        print(f"  {s['file']}: {s['records']} record(s), {s['bytes']} bytes")
    if report["corrupt_records"] or report["torn_tail_bytes"]:
        print(f"  corrupt records: {report['corrupt_records']} (quarantined at start-up); "
              f"torn tail: {report['torn_tail_bytes']} bytes (cut at start-up)")
    if report["quarantined_files"]:
        print(f"  quarantined already: {', '.join(report['quarantined_files'])}")


async def _replay(dirs: list[Path], config_path: str | None, within_s: float) -> int:
    from bus.factory import base_bus
    from bus.spool.bus import SpoolBus
    from settings import config

    cfg = config.load(config_path)
    if cfg.bus.kind != "kafka":
        print("telemetry-gateway spool replay: needs bus.kind kafka (TG_BUS__KIND=kafka)", file=sys.stderr)
        return 2
    bus = SpoolBus(cfg.spool, base_bus(cfg), replay_dirs=dirs)
    await bus.start()
    try:
        total = sum(s.records for s in bus.logs)
        print(f"replaying {total} record(s) from {len(dirs)} director(ies) to "
              f"{cfg.bus.kafka.bootstrap_servers}")
        started = time.monotonic()
        while bus.logs and any(s.records or s.unread() for s in bus.logs):
            if within_s and time.monotonic() - started > within_s:
                left = sum(s.records for s in bus.logs)
                print(f"timed out after {within_s:.0f}s: {left} record(s) left on disk", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
        print(f"replayed {total} record(s) in {time.monotonic() - started:.1f}s")
        return 0
    finally:
        await bus.stop()


async def _fsync_test(directory: Path, seconds: float, batch_bytes: int, concurrency: int) -> dict[str, Any]:
    """Append batches from ``concurrency`` writers for ``seconds`` through the spool's own group
    commit in a scratch directory under ``directory``; the fsync latency distribution and rates."""
    import tempfile

    from bus.contract import Batch
    from bus.spool.store import SpoolLog
    from otlp.signals import Signal

    with tempfile.TemporaryDirectory(prefix="spool-fsync-test-", dir=directory) as scratch:
        spool = SpoolLog(Path(scratch), writable=True)
        assert spool.lock()
        await spool.open()
        timings: list[float] = []
        spool.on_fsync = timings.append
        batch = Batch(Signal.TRACES, "fsync-test", b"\x0a" * batch_bytes, 1, [])
        appended = 0
        deadline = time.monotonic() + seconds

        async def writer() -> None:
            nonlocal appended
            while time.monotonic() < deadline:
                await spool.append(batch)
                appended += 1

        started = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        took = time.monotonic() - started
        await spool.close()
    timings.sort()

    def q(p: float) -> float:
        return round(timings[min(len(timings) - 1, int(p * len(timings)))] * 1000, 3) if timings else 0.0

    return {"fsyncs": len(timings), "batches": appended, "batches_per_s": round(appended / took),
            "mb_per_s": round(appended * batch_bytes / took / 1e6, 1),
            "batches_per_fsync": round(appended / max(1, len(timings)), 1),
            "fsync_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)}}


def main(ns: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dirs = spool_dirs(ns.dir)
    if not ns.dir.is_dir():
        print(f"telemetry-gateway spool: {ns.dir} is not a directory", file=sys.stderr)
        return 2
    if ns.spool_command == "fsync-test":
        report = asyncio.run(_fsync_test(ns.dir, ns.seconds, ns.batch_bytes, ns.concurrency))
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        return 0
    if ns.spool_command == "inspect":
        reports = [inspect_dir(d) for d in dirs]
        if ns.json:
            sys.stdout.write(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for report in reports:
                _print_text(report)
            if not reports:
                print(f"{ns.dir}: no spool directories")
        return 0
    try:
        return asyncio.run(_replay(dirs, ns.config, ns.timeout))
    except OSError as exc:
        print(f"telemetry-gateway spool replay: {exc}", file=sys.stderr)
        return 1
