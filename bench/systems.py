"""Start and stop the systems under test: the gateway and the OpenTelemetry Collector peer.

Both are real subprocesses on free loopback ports, in their own session (so the whole tree
is measured and stopped together), each publishing to its own topic prefix on the same Kafka.
The gateway is configured through ``TG_*`` environment overrides, as in production; the
Collector gets a config file rewritten for the run's ports, brokers and topics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.subprocs import free_port, spawn, terminate
from otlp import wire
from otlp.signals import Signal
from pipelines.sinks.file import whole_frames

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_COLLECTOR_CONFIG = Path(__file__).resolve().parent / "collector-otlp-kafka.yaml"
# The same pipeline acknowledging after Kafka has the data (batching in the exporter's queue).
DURABLE_COLLECTOR_CONFIG = BENCH_COLLECTOR_CONFIG.with_name("collector-otlp-kafka-durable.yaml")
# The file sink's data files by format (pipelines/sinks/file.py): JSON lines, framed protobuf.
SINK_EXTENSIONS = (".jsonl", ".binpb")


def stack_cache() -> Path:
    """Where ``stack/`` installs services (same rule as ``tests/stackenv.py``)."""
    env = os.environ.get("TG_STACK_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "telemetry-gateway" / "stack"


def default_jaeger_bin() -> Path:
    return Path(os.environ.get("TG_STACK_JAEGER_BIN") or stack_cache() / "bin" / "jaeger")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class StartError(RuntimeError):
    """A system under test did not come up; the message carries the tail of its log."""


def gateway_env(grpc_port: int, http_port: int, admin_port: int, data_dir: Path,
                overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment of a gateway child on loopback ports, then ``overrides``.

    This process's own ``TG_*`` settings are left out (a developer's shell must not change what a
    bench or a test measures), except the stack's addresses.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_") or k.startswith("TG_STACK")}
    env.update({
        "TG_SERVER__HOST": "127.0.0.1",
        "TG_SERVER__GRPC_PORT": str(grpc_port),
        "TG_SERVER__HTTP_PORT": str(http_port),
        "TG_ADMIN__HOST": "127.0.0.1",
        "TG_ADMIN__PORT": str(admin_port),
        "TG_PIPELINES__FILE__DATA_DIR": str(data_dir),
    })
    env.update(overrides)
    return env


class _Subprocess:
    name = "system"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self, args: list[str], env: Mapping[str, str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(args, self.log_path, env=env, cwd=REPO_ROOT)

    def _ready(self) -> bool:
        return _listening(self.grpc_port) and _listening(self.http_port)

    def start(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                raise StartError(f"{self.name} exited with {rc} during start:\n{self.log()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StartError(f"{self.name} not ready within {within_s:.0f}s:\n{self.log()}")

    def stop(self, within_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        terminate(self.proc, within_s)
        return self.proc.returncode

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return "(no log)"


class GatewaySystem(_Subprocess):
    """``telemetry-gateway run --workers N`` on free ports; ready when ``/readyz`` says 200."""

    name = "gateway"

    def __init__(self, workdir: Path, *, workers: int = 1, bus: str = "kafka",
                 bootstrap: str = "127.0.0.1:9092", topic_prefix: str = "otlp_",
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.workers = workers
        self.bus = bus
        self.topic_prefix = topic_prefix
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.env = gateway_env(self.grpc_port, self.http_port, self.admin_port, self.data_dir, {
            "TG_BUS__KIND": bus,
            "TG_BUS__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TG_BUS__KAFKA__TOPIC_PREFIX": topic_prefix,
            "TG_ACK": "durable",
            "TG_LOG_LEVEL": "WARNING",
            **(env or {}),
        })

    def start(self, within_s: float = 60.0) -> None:
        self._spawn([sys.executable, "-m", "gateway.cli", "run", "--workers", str(self.workers)], self.env)
        super().start(within_s)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1.0) as r:
                return bool(r.status == 200) and super()._ready()
        except (urllib.error.URLError, OSError):
            return False

    def sink_items(self, signals: list[Signal]) -> int:
        """Items the embedded file sink wrote (memory bus): the delivery point without Kafka."""
        return SinkCounter(self.data_dir, signals).poll()


class SinkCounter:
    """Items in the file sink's output under ``data_dir``, counted incrementally: OTLP/JSON lines
    (``<signal>*.jsonl``, the default) and, for ``pipelines.file.format: proto``,
    length-prefixed protobuf messages (``<signal>*.binpb``, framed as
    ``pipelines/sinks/file.py`` says).

    Each :meth:`poll` parses only the whole lines or messages written since the previous one (the
    sink appends; a line without its newline, or a message not all written, is not delivered
    yet), so waiting for a sink that is still draining costs the bench a pass over the new
    output, not a re-read of everything.

    When the sink wrote its last record is read from the files' modification times
    (:meth:`last_write`), not from when this counter got round to parsing them: parsing a
    run's output takes the bench seconds of its own (hundreds of MB of JSON), which must not be
    charged to the sink being measured.
    """

    def __init__(self, data_dir: Path, signals: list[Signal]) -> None:
        self.data_dir = data_dir
        self.signals = signals
        self.items = 0
        self._offsets: dict[Path, int] = {}

    def _signal_files(self) -> list[tuple[Signal, Path]]:
        return [(sig, path) for sig in self.signals for ext in SINK_EXTENSIONS
                for path in sorted(self.data_dir.glob(f"*/{sig.value}*{ext}"))]

    def _files(self) -> list[Path]:
        return [path for _, path in self._signal_files()]

    def sizes(self) -> dict[Path, int]:
        """Bytes in each data file now: unchanged between two looks means the sink is quiet."""
        out: dict[Path, int] = {}
        for path in self._files():
            try:
                out[path] = path.stat().st_size
            except FileNotFoundError:
                continue
        return out

    def last_write(self) -> float:
        """The latest modification time (epoch seconds) over the data files; 0.0 when none."""
        times = [0.0]
        for path in self._files():
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:
                continue
        return max(times)

    def poll(self) -> int:
        for sig, path in self._signal_files():
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            if path.suffix == ".binpb":
                messages, whole = whole_frames(chunk)
                # Framing only, as the Kafka count: the sink wrote what the bus acknowledged.
                self.items += sum(wire.prepare(sig, m, (), check=False).items for m in messages)
            else:
                whole = chunk.rfind(b"\n") + 1
                for line in chunk[:whole].splitlines():
                    if line.strip():
                        self.items += count_json_items(sig, orjson.loads(line))
            self._offsets[path] = offset + whole
        return self.items


def count_json_items(signal: Signal, doc: Mapping[str, Any]) -> int:
    """Items in one OTLP/JSON request (camelCase field names, as the OTLP JSON mapping has)."""
    if signal is Signal.TRACES:
        return sum(len(ss.get("spans", [])) for rs in doc.get("resourceSpans", [])
                   for ss in rs.get("scopeSpans", []))
    if signal is Signal.LOGS:
        return sum(len(sl.get("logRecords", [])) for rl in doc.get("resourceLogs", [])
                   for sl in rl.get("scopeLogs", []))
    total = 0
    for rm in doc.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
                    if kind in metric:
                        total += len(metric[kind].get("dataPoints", []))
    return total


def collector_config(base: Mapping[str, Any], *, grpc_port: int, http_port: int, bootstrap: str,
                     topic_prefix: str) -> dict[str, Any]:
    """The base Collector config with this run's endpoints, brokers and topics.

    Works on whichever otlp receiver and kafka exporter the base names (``otlp``,
    ``kafka/...``), so the deploy config can be benchmarked as written.
    """
    cfg: dict[str, Any] = json.loads(json.dumps(base))  # deep copy of plain data
    for name, rcv in (cfg.get("receivers") or {}).items():
        if name.split("/")[0] == "otlp":
            protocols = rcv.setdefault("protocols", {})
            protocols.setdefault("grpc", {})["endpoint"] = f"127.0.0.1:{grpc_port}"
            protocols.setdefault("http", {})["endpoint"] = f"127.0.0.1:{http_port}"
    for name, exp in (cfg.get("exporters") or {}).items():
        if name.split("/")[0] == "kafka":
            exp["brokers"] = bootstrap.split(",")
            exp.pop("topic", None)
            for sig in Signal:
                section = exp.setdefault(_COLLECTOR_SIGNAL[sig], {})
                section["topic"] = sig.topic(topic_prefix)
                section.setdefault("encoding", "otlp_proto")
    telemetry = cfg.setdefault("service", {}).setdefault("telemetry", {})
    telemetry["metrics"] = {"level": "none"}  # no :8888 listener to clash with anything
    return cfg


_COLLECTOR_SIGNAL = {Signal.TRACES: "traces", Signal.LOGS: "logs", Signal.METRICS: "metrics"}


def base_collector_config_path() -> Path:
    """The bench's own Collector config: batching matched to the gateway's (20 ms, under 1 MB).

    ``deploy/collector/otlp-to-kafka.yaml`` has the same message caps but a 200 ms batch age
    meant for production, not for a latency comparison with the gateway's 20 ms batches.
    """
    return BENCH_COLLECTOR_CONFIG


class CollectorSystem(_Subprocess):
    """The Jaeger v2 binary running a Collector config: otlp -> batch -> kafka."""

    name = "collector"

    def __init__(self, workdir: Path, *, binary: Path, bootstrap: str = "127.0.0.1:9092",
                 topic_prefix: str = "otlp_", base_config: Path | None = None) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.topic_prefix = topic_prefix
        self.base_config = base_config or base_collector_config_path()
        self.config_path = workdir / "collector.yaml"
        base = yaml.safe_load(self.base_config.read_text())
        cfg = collector_config(base, grpc_port=self.grpc_port, http_port=self.http_port, bootstrap=bootstrap,
                               topic_prefix=topic_prefix)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def start(self, within_s: float = 60.0) -> None:
        if not self.binary.is_file():
            raise StartError(f"the Collector peer (jaeger binary) is not built at {self.binary}; "
                             "run `bash stack/up`")
        env = dict(os.environ)
        env.setdefault("GOMAXPROCS", str(os.cpu_count() or 1))
        self._spawn([str(self.binary), "--config", str(self.config_path)], env)
        super().start(within_s)
