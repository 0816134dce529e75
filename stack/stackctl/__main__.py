"""``stack/up``, ``stack/down`` and ``stack/status``: the commands over the services."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from . import otel_java, probes, procs
from .elasticsearch import Elasticsearch
from .jaeger import Jaeger
from .kafka import Kafka
from .prometheus import Prometheus
from .service import Service
from .settings import Settings
from .victorialogs import VictoriaLogs

# Install/start order: Kafka first (others wait on it), the slow Go build of Jaeger last so the
# JVMs boot while it compiles.
ORDER = ["kafka", "elasticsearch", "prometheus", "victorialogs", "jaeger"]
# Installed by `stack/up` (with no names, or named) before the services; nothing of them runs.
TOOLS: dict[str, Callable[[Settings], None]] = {otel_java.NAME: otel_java.install}


def _services(names: list[str], brokers: int | None) -> tuple[Settings, list[Service]]:
    unknown = [n for n in names if n not in ORDER and n not in TOOLS]
    if unknown:
        raise SystemExit(f"stack: unknown service(s) {', '.join(unknown)}; "
                         f"known: {', '.join([*ORDER, *TOOLS])}")
    s = Settings.from_env()
    made: dict[str, Callable[[], Service]] = {
        "kafka": lambda: Kafka(s, brokers), "elasticsearch": lambda: Elasticsearch(s),
        "prometheus": lambda: Prometheus(s), "jaeger": lambda: Jaeger(s),
        "victorialogs": lambda: VictoriaLogs(s),
    }
    return s, [made[n]() for n in ORDER if not names or n in names]


def _fail(svc: Service, reason: str, logs: bool = True) -> int:
    print(f"\nstack/up: {svc.name} did not come up: {reason}", file=sys.stderr)
    for unit in svc.units() if logs else []:
        print(f"--- last lines of {unit.log} ---\n{procs.log_tail(unit.log)}", file=sys.stderr)
    return 1


def _start(svc: Service) -> bool:
    """Start ``svc`` unless it already runs; True when it has yet to become healthy."""
    others = [u for u in svc.all_units() if u not in svc.units()]
    for unit, pid, took in procs.stop(others, svc.stop_grace()):
        print(f"{svc.name}: stopped {unit.name} (pid {pid}) of the other layout in {took:.1f}s", flush=True)
    running = [procs.running_pid(u) for u in svc.units()]
    if all(running):
        health = svc.health()
        state = "healthy" if health.ok else f"starting ({health.detail})"
        print(f"{svc.name}: already running, {state} (pid {', '.join(map(str, running))})", flush=True)
        return not health.ok
    procs.stop(svc.units(), svc.stop_grace())  # a half-running layout is restarted whole
    busy = [p for p in svc.ports() if probes.port_open(svc.s.host, p)]
    if busy:
        raise RuntimeError(f"port(s) {', '.join(map(str, busy))} on {svc.s.host} are taken by a process "
                           "stack/up did not start; stop it or override the port in stack/ports.env")
    svc.prepare()
    pids = [procs.spawn(u) for u in svc.units()]
    print(f"{svc.name}: started (pid {', '.join(map(str, pids))}), log {svc.units()[0].log}", flush=True)
    return True


def _wait_healthy(services: list[Service], timeout: float) -> int:
    began = time.monotonic()
    pending = list(services)
    last_note = began
    while pending:
        for svc in list(pending):
            for unit in svc.units():
                pid = procs.recorded_pid(unit)
                status = procs.exit_status(pid) if pid else "has no pid file"
                if status == "running" and procs.running_pid(unit) is None:
                    status = "is gone"
                if status != "running":
                    return _fail(svc, f"process {unit.name} (pid {pid}) {status}")
            health = svc.health()
            if health.ok:
                took = time.monotonic() - began
                print(f"{svc.name}: healthy after {took:.0f}s ({health.detail})", flush=True)
                pending.remove(svc)
        if not pending:
            break
        now = time.monotonic()
        if now - began > timeout:
            svc = pending[0]
            return _fail(svc, f"not healthy within {timeout:.0f}s ({svc.health().detail})")
        if now - last_note >= 10:
            waiting = ", ".join(f"{s.name} ({s.health().detail})" for s in pending)
            print(f"  ... waiting {now - began:.0f}s/{timeout:.0f}s for {waiting}", flush=True)
            last_note = now
        time.sleep(0.5)
    return 0


def up(ns: argparse.Namespace) -> int:
    began = time.monotonic()
    settings, services = _services(ns.services, ns.kafka_brokers or 1)
    for name, install in TOOLS.items():
        if not ns.services or name in ns.services:
            try:
                install(settings)
            except RuntimeError as exc:
                print(f"\nstack/up: {name} was not installed: {exc}", file=sys.stderr)
                return 1
    to_wait = []
    for svc in services:
        try:
            svc.install()
            if _start(svc):
                to_wait.append(svc)
        except RuntimeError as exc:  # install or pre-start failure: its message says it all
            return _fail(svc, str(exc), logs=False)
    code = _wait_healthy(to_wait, settings.start_timeout)
    if code == 0:
        print(f"stack/up: all healthy in {time.monotonic() - began:.0f}s")
        for svc in services:
            print(f"  {svc.name:<14} {svc.endpoints()}")
    return code


def down(ns: argparse.Namespace) -> int:
    leftovers = []
    for svc in reversed(_services(ns.services, None)[1]):
        for unit, pid, took in procs.stop(svc.all_units(), svc.stop_grace()):
            print(f"{svc.name}: stopped {unit.name} (pid {pid}) in {took:.1f}s", flush=True)
            leftovers += procs.group_members(pid)
    if leftovers:
        print(f"stack/down: processes still alive: {leftovers}", file=sys.stderr)
        return 1
    print("stack/down: nothing of the stack is running")
    return 0


def status(ns: argparse.Namespace) -> int:
    all_ok = True
    for svc in _services(ns.services, None)[1]:
        pids = [procs.running_pid(u) for u in svc.units()]
        if not any(pids):
            state, all_ok = "stopped", False
        else:
            health = svc.health()
            all_ok &= health.ok and all(pids)
            state = ("healthy" if health.ok else "unhealthy") + f" ({health.detail})"
        pid_text = ",".join(str(p) if p else "-" for p in pids)
        print(f"{svc.name:<14} {svc.endpoints():<44} pid {pid_text:<18} {state}")
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="install, start and wait until healthy")
    p_up.add_argument("--kafka-brokers", type=int, choices=(1, 3), default=None,
                      help="1 (default): single node on 9092; 3: replicated cluster on 9092/9094/9096")
    for name, fn in (("up", up), ("down", down), ("status", status)):
        p = p_up if name == "up" else sub.add_parser(name)
        p.add_argument("services", nargs="*", metavar="SERVICE", help=" | ".join([*ORDER, *TOOLS]))
        p.set_defaults(fn=fn)
    ns = parser.parse_args(argv)
    try:
        return int(ns.fn(ns))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
