"""The load generator: worker processes that send OTLP, and the parent that drives and sums them.

Load comes from separate processes (never from inside the system under test, and never from
the process that measures it), each with its own event loop and a pre-built ring of payloads.
All workers share one start instant on the system-wide monotonic clock, so warm-up and the
measured window line up across processes and with the parent's CPU/RSS samples of the target.

Closed loop: ``concurrency`` lanes per process, each sends, waits, sends again (max
throughput). Open loop: requests leave on a fixed schedule at ``rate`` items/s whatever the
answers do, and latency counts from the intended send time (see ``bench.schedule``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bench.histogram import LatencyHistogram
from bench.payloads import PayloadShape, build_ring
from bench.schedule import intended_times, offset_for, per_process_rate
from bench.transports import make_sender
from otlp.signals import Signal

PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class LoadSpec:
    """Everything a worker needs; plain data so it pickles into a spawned process."""

    grpc_target: str
    http_url: str
    transport: Literal["grpc", "http"] = "grpc"
    signal: Signal = Signal.TRACES
    shape: PayloadShape = field(default_factory=PayloadShape)
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8  # closed: in-flight requests per process; open: cap on in-flight
    rate: float = 0.0  # open loop: offered items per second, all processes together
    warmup_s: float = 2.0
    duration_s: float = 10.0
    processes: int = 1
    connections: int = 2
    timeout_s: float = 30.0
    http_client: str = "auto"
    headers: tuple[tuple[str, str], ...] = ()
    ring: int = 8
    tls_ca_file: str = ""  # TLS to the target, trusting this CA; empty: plaintext


@dataclass
class WorkerTotals:
    """Counters of one worker (or the sum of all). ``measured_*`` cover only the measured window."""

    sent_requests: int = 0
    sent_items: int = 0
    acked_items: int = 0  # whole run, warm-up included: what the loss check expects in Kafka
    rejected_items: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    measured_requests: int = 0
    measured_items: int = 0
    measured_bytes: int = 0
    late_sends: int = 0  # open loop: sends that left > 10 ms after their intended time
    cpu_s: float = 0.0  # the generator's own CPU over the whole run: it shares the cores with the target
    hist: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(self, other: WorkerTotals) -> None:
        for name in ("sent_requests", "sent_items", "acked_items", "rejected_items", "measured_requests",
                     "measured_items", "measured_bytes", "late_sends", "cpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.hist.merge(other.hist)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("hist", "errors")}
        d["errors"] = dict(self.errors)
        d["hist"] = self.hist.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerTotals:
        t = cls(**{k: v for k, v in d.items() if k not in ("hist", "errors")})
        t.errors = Counter(d.get("errors", {}))
        t.hist = LatencyHistogram.from_dict(d["hist"])
        return t


def _connections(spec: LoadSpec) -> int:
    """HTTP/1.1 carries one request per connection at a time; gRPC multiplexes over a few."""
    return spec.connections if spec.transport == "grpc" else max(spec.connections, spec.concurrency)


class _Worker:
    def __init__(self, spec: LoadSpec, index: int, out: Any) -> None:
        self.spec = spec
        self.index = index
        self.t_start = self.t_measure = self.t_end = 0.0
        self.out = out
        self.totals = WorkerTotals()
        self.interval = LatencyHistogram()  # for the live line; reset at each progress report
        self.payloads = build_ring(spec.signal, spec.shape, spec.ring, seed=index + 1)
        self.sender = make_sender(spec.transport, grpc_target=spec.grpc_target, http_url=spec.http_url,
                                  signal=spec.signal, connections=_connections(spec),
                                  timeout_s=spec.timeout_s, http_client=spec.http_client,
                                  headers=dict(spec.headers), tls_ca_file=spec.tls_ca_file)
        self._n = 0

    def _next_payload(self) -> tuple[bytes, int]:
        p = self.payloads[self._n % len(self.payloads)]
        self._n += 1
        return p.data, p.items

    async def _one(self, data: bytes, items: int, t_from: float) -> None:
        t = self.totals
        t.sent_requests += 1
        t.sent_items += items
        accepted, err = await self.sender.send(data, items)
        done = time.monotonic()
        if err is not None:
            t.errors[err] += 1
            return
        t.acked_items += accepted
        t.rejected_items += items - accepted
        if self.t_measure <= t_from < self.t_end:
            lat = done - t_from
            t.hist.record(lat)
            self.interval.record(lat)
            t.measured_requests += 1
            t.measured_items += accepted
            t.measured_bytes += len(data)
        elif t_from < self.t_measure:
            self.interval.record(done - t_from)

    async def _closed_lane(self) -> None:
        while True:
            now = time.monotonic()
            if now >= self.t_end:
                return
            data, items = self._next_payload()
            await self._one(data, items, now)

    async def _open(self) -> None:
        spec = self.spec
        req_rate = per_process_rate(spec.rate, spec.processes) / spec.shape.items
        phase = offset_for(self.index, spec.processes, req_rate)
        slots = asyncio.Semaphore(spec.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def fire(data: bytes, items: int, intended: float) -> None:
            try:
                await self._one(data, items, intended)
            finally:
                slots.release()

        for intended in intended_times(req_rate, self.t_start + phase, self.t_end):
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()  # at the cap the schedule waits, but latency still counts from `intended`
            if time.monotonic() - intended > 0.010:
                self.totals.late_sends += 1
            data, items = self._next_payload()
            task = asyncio.create_task(fire(data, items, intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self._report_progress()

    def _report_progress(self) -> None:
        t = self.totals
        self.out.put(("progress", self.index, {
            "acked_items": t.acked_items, "errors": sum(t.errors.values()),
            "hist": self.interval.to_dict(), "at": time.monotonic()}))
        self.interval = LatencyHistogram()

    async def run(self, start_at: float) -> None:
        self.t_start = start_at
        self.t_measure = start_at + self.spec.warmup_s
        self.t_end = self.t_measure + self.spec.duration_s
        await self.sender.start()
        self.out.put(("ready", self.index, None))
        delay = self.t_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ticker = asyncio.create_task(self._progress())
        try:
            if self.spec.mode == "closed":
                await asyncio.gather(*(self._closed_lane() for _ in range(self.spec.concurrency)))
            else:
                await self._open()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._report_progress()
            await self.sender.close()


def _worker_main(spec: LoadSpec, index: int, start_value: Any, go: Any, out: Any) -> None:
    """Entry of a generator process: build payloads, report ready, wait for the common start."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        w = _Worker(spec, index, out)  # payloads are built before the clock starts
        out.put(("built", index, None))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0 = time.process_time()
        await w.run(start_value.value)
        w.totals.cpu_s = time.process_time() - cpu0
        out.put(("done", index, w.totals.to_dict()))

    try:
        asyncio.run(main())
    except Exception as exc:  # the parent reports it; a generator crash must not look like a target failure
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))


@dataclass
class Tick:
    """What the parent knows at each progress report: enough for the live line."""

    elapsed_s: float
    phase: str  # "warmup" | "measure" | "drain"
    items_per_s: float
    p99_ms: float
    errors: int


def run_load(spec: LoadSpec, *, on_tick: Callable[[Tick], None] | None = None,
             on_window: Callable[[str], None] | None = None, start_timeout_s: float = 60.0) -> WorkerTotals:
    """Run ``spec.processes`` generator processes and return their summed totals.

    ``on_window("start"|"end")`` fires at the edges of the measured window (the caller samples
    the target's CPU there); ``on_tick`` about twice a second.
    """
    ctx = mp.get_context("spawn")  # grpc and forking do not mix
    out = ctx.Queue()
    go = ctx.Event()
    start_value = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_worker_main, args=(spec, i, start_value, go, out), daemon=True,
                         name=f"bench-load-{i}") for i in range(spec.processes)]
    for p in procs:
        p.start()
    try:
        return _drive(spec, procs, out, go, start_value, on_tick, on_window, start_timeout_s)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


def _drive(spec: LoadSpec, procs: list[Any], out: Any, go: Any, start_value: Any,
           on_tick: Callable[[Tick], None] | None, on_window: Callable[[str], None] | None,
           start_timeout_s: float) -> WorkerTotals:
    # Payload building happens before `go`, in each worker; the start instant is set once all
    # workers have built theirs, with a margin for connecting.
    built: set[int] = set()
    deadline = time.monotonic() + start_timeout_s
    while len(built) < len(procs):
        try:
            kind, idx, payload = out.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"load generator processes not started within {start_timeout_s}s") from None
        if kind == "failed":
            raise RuntimeError(f"load generator {idx} failed: {payload}")
        built.add(idx)
    start_value.value = time.monotonic() + 0.5
    go.set()
    t0 = start_value.value
    t_measure, t_end = t0 + spec.warmup_s, t0 + spec.warmup_s + spec.duration_s
    ready: set[int] = set()
    done: dict[int, WorkerTotals] = {}
    last_acked: dict[int, int] = {}
    last_errors: dict[int, int] = {}
    window_hist = LatencyHistogram()
    prev_total, prev_at = 0, t0
    window = "before"
    deadline_ready = t0 + 10.0
    while len(done) < len(procs):
        now = time.monotonic()
        if on_window is not None and window == "before" and now >= t_measure:
            window = "open"
            on_window("start")
        if on_window is not None and window == "open" and now >= t_end:
            window = "closed"
            on_window("end")
        timeout = 0.1
        try:
            kind, idx, payload = out.get(timeout=timeout)
        except queue.Empty:
            if len(ready) < len(procs) and now > deadline_ready:
                raise RuntimeError("load generator processes could not connect within 10 s") from None
            if any(not p.is_alive() for i, p in enumerate(procs) if i not in done):
                raise RuntimeError("a load generator process died") from None
            continue
        if kind == "ready":
            ready.add(idx)
        elif kind == "failed":
            raise RuntimeError(f"load generator {idx} failed: {payload}")
        elif kind == "done":
            done[idx] = WorkerTotals.from_dict(payload)
        elif kind == "progress":
            last_acked[idx] = payload["acked_items"]
            last_errors[idx] = payload["errors"]
            window_hist.merge(LatencyHistogram.from_dict(payload["hist"]))
            total = sum(last_acked.values())
            if on_tick is not None and now - prev_at >= PROGRESS_EVERY_S * 0.9:
                phase = "warmup" if now < t_measure else "measure" if now < t_end else "drain"
                on_tick(Tick(now - t0, phase, (total - prev_total) / (now - prev_at),
                             window_hist.percentile_ms(99), sum(last_errors.values())))
                prev_total, prev_at = total, now
                window_hist = LatencyHistogram()
    if on_window is not None:
        if window == "before":
            on_window("start")
            window = "open"
        if window == "open":
            on_window("end")
    totals = WorkerTotals()
    for t in done.values():
        totals.add(t)
    return totals
