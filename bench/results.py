"""What one benchmark round measured, in the shape the report, targets and plot all read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoundResult:
    """One system under one load for one measured window."""

    scenario: str  # e.g. "traces-grpc-kafka-closed-w1": the key targets are looked up by
    system: str  # "gateway" | "collector"
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
        d["loss_ok"] = self.loss_ok
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundResult:
        return cls(**{k: v for k, v in d.items() if k not in ("items_per_cpu_s", "loss_ok")})


def scenario_name(*, signal: str, transport: str, bus: str, mode: str, workers: int,
                  load_pct: int | None = None) -> str:
    """``traces-grpc-kafka-closed-w1``; open-loop rounds at a share of max add it: ``open50``."""
    m = mode if load_pct is None else f"{mode}{load_pct}"
    return f"{signal}-{transport}-{bus}-{m}-w{workers}"
