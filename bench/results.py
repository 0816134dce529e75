"""What one benchmark round measured, in the shape the report, targets and plot all read."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoundResult:
    """One system under one load for one measured window."""

    scenario: str  # e.g. "traces-grpc-kafka-closed-w1": the key targets are looked up by
    system: str  # "gateway" | "collector" | "collector-durable"
    workers: int
    signal: str
    transport: str
    bus: str
    mode: str  # "closed" | "open"
    offered_items_per_s: float  # open loop; 0 for closed
    duration_s: float
    items_per_s: float
    bytes_per_s: float
    latency_ms: dict[str, float]
    cpu_s: float
    peak_rss_mib: float
    hwm_mib: float
    sent_items: int
    acked_items: int
    delivered_items: int
    errors: dict[str, int] = field(default_factory=dict)
    late_sends: int = 0
    generator_cores: float = 0.0  # CPU the load generator used, in cores, over its whole run
    machine_busy_cores: float = 0.0  # CPU the whole machine used in the window (broker, others...)
    topic_prefix: str = ""
    notes: list[str] = field(default_factory=list)
    load_pct: int | None = None  # open loop: offered load as % of the gateway's max in the same run
    warmup_s: float = 0.0  # load before the measured window (its acknowledged items count in acked_items)
    sink_drain_s: float = 0.0  # memory bus: seconds after the load until the file sink wrote the last item

    @property
    def delivered_items_per_s(self) -> float:
        """Items delivered per second over the whole load plus the time delivery took after it.

        On Kafka an acknowledgement means delivered, so this is about ``items_per_s``. On the
        memory bus an acknowledgement means queued: a sink slower than the receiver shows here,
        not in ``items_per_s`` (a short window ends before the queue does).
        """
        span = self.warmup_s + self.duration_s + self.sink_drain_s
        return min(self.delivered_items, self.acked_items) / span if span > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return self.latency_ms.get("p50", 0.0)

    @property
    def items_per_cpu_s(self) -> float:
        return self.items_per_s * self.duration_s / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def loss_ok(self) -> bool:
        """Every acknowledged item was delivered (duplicates from retries are not loss)."""
        return self.delivered_items >= self.acked_items

    @property
    def p99_ms(self) -> float:
        return self.latency_ms.get("p99", 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["items_per_cpu_s"] = round(self.items_per_cpu_s, 1)
        d["delivered_items_per_s"] = round(self.delivered_items_per_s, 1)
        d["loss_ok"] = self.loss_ok
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundResult:
        derived = ("items_per_cpu_s", "loss_ok", "delivered_items_per_s")
        return cls(**{k: v for k, v in d.items() if k not in derived})


def scenario_name(*, signal: str, transport: str, bus: str, mode: str, workers: int,
                  load_pct: int | None = None) -> str:
    """``traces-grpc-kafka-closed-w1``; open-loop rounds at a share of max add it: ``open50``."""
    m = mode if load_pct is None else f"{mode}{load_pct}"
    return f"{signal}-{transport}-{bus}-{m}-w{workers}"


def aggregate(rounds: list[RoundResult]) -> list[RoundResult]:
    """One result per (scenario, system): medians of repeated rounds, sums of the counters.

    A shared 2-core machine moves a closed-loop round by 2x between runs; alternating repeated
    rounds and taking medians is what makes a target or a ratio mean something. Latency
    percentiles are medians of each round's percentile (not a merged histogram), memory the
    median of the peaks; items sent, acknowledged and delivered add up, so the loss check of
    the aggregate holds exactly when it held for the rounds.
    """
    groups: dict[tuple[str, str], list[RoundResult]] = {}
    for r in rounds:
        groups.setdefault((r.scenario, r.system), []).append(r)
    out: list[RoundResult] = []
    for rs in groups.values():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        first = rs[0]
        errors: dict[str, int] = {}
        for r in rs:
            for k, v in r.errors.items():
                errors[k] = errors.get(k, 0) + v
        keys = {k for r in rs for k in r.latency_ms}
        out.append(RoundResult(
            scenario=first.scenario, system=first.system, workers=first.workers, signal=first.signal,
            transport=first.transport, bus=first.bus, mode=first.mode,
            offered_items_per_s=first.offered_items_per_s, duration_s=first.duration_s,
            items_per_s=_median(r.items_per_s for r in rs), bytes_per_s=_median(r.bytes_per_s for r in rs),
            latency_ms={k: _median(r.latency_ms.get(k, 0.0) for r in rs) for k in sorted(keys)},
            cpu_s=_median(r.cpu_s for r in rs), peak_rss_mib=_median(r.peak_rss_mib for r in rs),
            hwm_mib=_median(r.hwm_mib for r in rs), sent_items=sum(r.sent_items for r in rs),
            acked_items=sum(r.acked_items for r in rs), delivered_items=sum(r.delivered_items for r in rs),
            errors=errors, late_sends=sum(r.late_sends for r in rs),
            generator_cores=_median(r.generator_cores for r in rs),
            machine_busy_cores=_median(r.machine_busy_cores for r in rs),
            notes=[f"median of {len(rs)} rounds"], load_pct=first.load_pct, warmup_s=first.warmup_s,
            sink_drain_s=_median(r.sink_drain_s for r in rs),
        ))
    return out


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))
