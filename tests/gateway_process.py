"""Start a real gateway subprocess on free loopback ports, for e2e and integration tests.

Use it as a context manager::

    from tests.gateway_process import running_gateway

    with running_gateway({"TG_AUTH__ENABLED": "true", ...}) as gw:
        post(gw.http_url + "/v1/traces", ...)       # OTLP/HTTP base URL
        grpc.insecure_channel(gw.grpc_target)        # "127.0.0.1:<port>"
        gw.metric("gateway_received_items_total", signal="traces")   # scrape of /metrics
        gw.read_sink("default", "traces")            # file-sink lines, parsed OTLP JSON
    # leaving the block sends SIGTERM and asserts exit code 0

Configuration goes through ``TG_*`` environment overrides (the same rule as production), so a
test states exactly what differs from the defaults. Ports come from binding port 0; the log of
the process is kept in its temp dir and quoted when start-up fails, so a broken start is a clear
failure rather than a timeout.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.subprocs import free_port as free_port  # re-exported: tests take their ports here
from bench.subprocs import kill_group, spawn, terminate
from bench.systems import gateway_env
from pipelines.sinks.file import complete_lines, safe_name
from tests.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent


class GatewayProcess:
    """A started ``telemetry-gateway run`` subprocess and where to reach it."""

    def __init__(self, env: Mapping[str, str] | None = None, *, workers: int = 1,
                 workdir: Path | None = None, extra_args: list[str] | None = None,
                 admin_ssl: ssl.SSLContext | None = None) -> None:
        # admin_ssl: the gateway's admin port speaks TLS (admin.tls.*); this context reaches it.
        self.admin_ssl = admin_ssl
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="tg-gw-")
            workdir = Path(self._own_tmp.name)
        self.workdir = workdir
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "gateway.log"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.admin_port = free_port()
        self.workers = workers
        self.env = gateway_env(self.grpc_port, self.http_port, self.admin_port, self.data_dir,
                               {"PYTHONUNBUFFERED": "1", **(env or {})})
        self.args = [sys.executable, "-m", "gateway.cli", "run", "--workers", str(workers),
                     *(extra_args or [])]
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ----------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"{'https' if self.admin_ssl else 'http'}://127.0.0.1:{self.admin_port}"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, within: float = 30.0, *, until_ready: bool = True) -> GatewayProcess:
        """Spawn and wait until ``/readyz`` answers 200 (or the process dies: then fail with its log);
        with ``until_ready=False``, only until it answers at all (a gateway expected to start unready)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.args, self.log_path, env=self.env, cwd=REPO_ROOT)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                rc = self.proc.returncode
                raise AssertionError(f"gateway exited with {rc} during start:\n{self.log()}")
            status = self.readyz()[0]
            return status == 200 if until_ready else status in (200, 503)

        try:
            wait_for(ready, within=within, what=f"gateway /readyz on {self.admin_url}")
        except AssertionError:
            self.kill()
            raise
        return self

    def stop(self, within: float = 20.0) -> int:
        """SIGTERM, wait for exit, return the exit code (killing it if it does not exit in time)."""
        if self.proc is None:
            return 0
        if terminate(self.proc, within) is None:
            raise AssertionError(f"gateway did not exit within {within}s of SIGTERM:\n{self.log()}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)

    def cleanup(self) -> None:
        self.kill()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return "(no log)"

    # -- admin --------------------------------------------------------------------------------
    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=2.0, context=self.admin_ssl) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def readyz(self) -> tuple[int, str]:
        return self._get("/readyz")

    def metrics_text(self) -> str:
        status, body = self._get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body}"
        return body

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 when absent)."""
        return sum(value for _, value in self._samples(name, labels))

    def metric_by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """Like ``metric``, summed per value of ``label``: which reasons, signals, ... occurred."""
        out: dict[str, float] = {}
        for sample_labels, value in self._samples(name, labels):
            key = sample_labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def _samples(self, name: str, labels: Mapping[str, str]) -> Iterator[tuple[dict[str, str], float]]:
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    yield sample.labels, sample.value

    # -- file sink ----------------------------------------------------------------------------
    def sink_files(self, tenant: str, signal_name: str) -> list[Path]:
        """The file-sink files for one tenant and signal (one per worker process)."""
        d = self.data_dir / safe_name(tenant)
        return sorted(d.glob(f"{signal_name}*.jsonl")) if d.is_dir() else []

    def read_sink(self, tenant: str, signal_name: str) -> list[dict[str, Any]]:
        """Every complete line the file sink wrote for this tenant and signal, as OTLP JSON."""
        out: list[dict[str, Any]] = []
        for path in self.sink_files(tenant, signal_name):
            out.extend(json.loads(line) for line in complete_lines(path))
        return out


@contextmanager
def running_gateway(env: Mapping[str, str] | None = None, *, workers: int = 1,
                    extra_args: list[str] | None = None, within: float = 30.0,
                    expect_clean_exit: bool = True,
                    admin_ssl: ssl.SSLContext | None = None) -> Iterator[GatewayProcess]:
    """Start a gateway, yield it, then SIGTERM it and (by default) assert it exited 0."""
    gw = GatewayProcess(env, workers=workers, extra_args=extra_args, admin_ssl=admin_ssl)
    try:
        gw.start(within=within)
        yield gw
        rc = gw.stop()
        if expect_clean_exit:
            assert rc == 0, f"gateway exited {rc} after SIGTERM:\n{gw.log()}"
    finally:
        gw.cleanup()


_OTLP_JSON_KEYS = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
    "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
}


def resource_attrs(resource: dict[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON resource's attributes as {key: plain value} (string/int/bool/double)."""
    out: dict[str, Any] = {}
    for kv in resource.get("attributes", []):
        value = kv.get("value", {})
        out[kv["key"]] = next(iter(value.values()), None) if value else None
    return out


def sink_items(lines: list[dict[str, Any]], signal_name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, item) for every span / log record / metric in file-sink lines."""
    rx_key, sx_key, item_key = _OTLP_JSON_KEYS[signal_name]
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for line in lines:
        for rx in line.get(rx_key, []):
            attrs = resource_attrs(rx.get("resource", {}))
            for sx in rx.get(sx_key, []):
                out.extend((attrs, item) for item in sx.get(item_key, []))
    return out
