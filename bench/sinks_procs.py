"""What ``bench sinks`` drains with: our pipelines workers, and Jaeger v2's own Kafka -> ES writer.

Each is a real subprocess in its own session (``bench.subprocs``), so its whole tree is measured
(``bench.procstat``) and stopped together. Workers are configured through ``TG_*`` overrides, as
in production; Jaeger gets a Collector config with a Kafka receiver on our traces topic
(``otlp_proto``) and its Elasticsearch storage under an index prefix of its own.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.subprocs import free_port, spawn, terminate
from bench.systems import REPO_ROOT, StartError, stack_cache

ES_URL = os.environ.get("TG_STACK_ES", "http://127.0.0.1:9200")
PROMETHEUS_WRITE_URL = os.environ.get("TG_STACK_PROMETHEUS", "http://127.0.0.1:9090") + "/api/v1/write"


def stack_pid(service: str, port: int) -> int | None:
    """The pid of a stack service (``elasticsearch``, ``prometheus``): the one ``stack/up``
    recorded if alive, else the process listening on ``port`` (a service restarted by hand or
    by a test keeps its port, not always its pid file)."""
    try:
        pid = int((stack_cache() / "run" / f"{service}.pid").read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    return listener_pid(port)


def listener_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The process with a TCP socket listening on ``port`` (from /proc/net/tcp*), if any."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue  # exited, or not ours to read
    return None


def worker_env(bootstrap: str, prefix: str) -> dict[str, str]:
    """A pipelines worker's environment: this run's topics, group, dead letters and stores.

    The shell's own ``TG_*`` settings are left out (they must not change what is measured),
    except the stack's addresses.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_") or k.startswith("TG_STACK")}
    env.update(
        {
            "TG_BUS__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TG_BUS__KAFKA__TOPIC_PREFIX": prefix,
            "TG_PIPELINES__GROUP_PREFIX": prefix,
            "TG_PIPELINES__DEAD_LETTER_TOPIC": prefix + "dead_letter",
            "TG_PIPELINES__ADMIN_HOST": "127.0.0.1",
            "TG_PIPELINES__ELASTICSEARCH__HOSTS": ES_URL,
            "TG_PIPELINES__PROMETHEUS__URL": PROMETHEUS_WRITE_URL,
            "TG_LOG_LEVEL": "WARNING",
        }
    )
    return env


class Drainer:
    """One subprocess that drains the topic; ``pid`` for its CPU, ``stop`` for a clean exit."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], workdir: Path, cwd: Path = REPO_ROOT
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc = spawn(args, self.log_path, env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        """Raise StartError (with the log's tail) if the process has exited."""
        if self.proc.poll() is not None:
            raise StartError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self, within_s: float = 20.0) -> int | None:
        return terminate(self.proc, within_s, group=True)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return "(no log)"


def pipelines_worker(
    sink: str, index: int, bootstrap: str, prefix: str, workdir: Path, tree: Path | None = None
) -> Drainer:
    """``telemetry-gateway pipelines --sink <sink>`` on this run's topics, its admin on a free port.

    ``tree``: run the worker's code from that source tree (an exported revision, for a
    before/after comparison that other uncommitted work cannot touch) instead of this one.
    """
    args = [
        sys.executable,
        "-m",
        "gateway.cli",
        "pipelines",
        "--sink",
        sink,
        "--admin-port",
        str(free_port()),
    ]
    env = worker_env(bootstrap, prefix)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return Drainer(f"pipelines-{sink}-{index}", args, env, workdir, cwd=tree or REPO_ROOT)


def jaeger_config(
    *, bootstrap: str, topic: str, group: str, index_prefix: str, es_url: str, bulk_workers: int
) -> dict[str, Any]:
    """Jaeger v2 as a Kafka -> Elasticsearch writer: our traces topic in, its ES storage out.

    Its Elasticsearch settings are its defaults but for the index prefix, one shard and no
    replica (a single test node), and ``bulk_processing.workers``; no query service and no
    self-metrics listener, so nothing binds a port.
    """
    return {
        "service": {
            "extensions": ["jaeger_storage"],
            "pipelines": {
                "traces": {
                    "receivers": ["kafka"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {
                "backends": {
                    "es_bench": {
                        "elasticsearch": {
                            "server_urls": [es_url],
                            # Its client finds no node newer than it knows at the health check
                            # (9.x here): skip that, and name the newest API it speaks.
                            "version": 8,
                            "disable_health_check": True,
                            "indices": {
                                "index_prefix": index_prefix,
                                "spans": {"shards": 1, "replicas": 0},
                                "services": {"shards": 1, "replicas": 0},
                            },
                            "bulk_processing": {"workers": bulk_workers},
                        }
                    }
                }
            }
        },
        "receivers": {
            "kafka": {
                "brokers": bootstrap.split(","),
                "topic": topic,
                "encoding": "otlp_proto",
                "group_id": group,
                "initial_offset": "earliest",
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "es_bench"}},
    }


def jaeger_writer(binary: Path, workdir: Path, config: dict[str, Any]) -> Drainer:
    if not binary.is_file():
        raise StartError(f"the Jaeger binary is not built at {binary}; run `bash stack/up`")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "jaeger-es-writer.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ)
    env.setdefault("GOMAXPROCS", str(os.cpu_count() or 1))
    return Drainer("jaeger-es-writer", [str(binary), "--config", str(path)], env, workdir)


def es_request(method: str, path: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """One Elasticsearch call on the stack's node; the JSON answer ({} on a 404)."""
    req = urllib.request.Request(ES_URL + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body: dict[str, Any] = json.loads(resp.read() or b"{}")
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        exc.msg = f"{exc.msg} ({method} {path}): {exc.read()[:300]!r}"
        raise


def es_count(pattern: str, *, refresh: bool = False) -> int:
    """Documents in the indices matching ``pattern`` (refreshed first when asked); 0 while an
    index just created has no shard ready (503)."""
    try:
        if refresh:
            es_request("POST", f"/{pattern}/_refresh?ignore_unavailable=true&allow_no_indices=true")
        body = es_request("GET", f"/{pattern}/_count?ignore_unavailable=true&allow_no_indices=true")
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return 0
        raise
    return int(body.get("count", 0))


def es_delete(pattern: str) -> None:
    """Drop a scenario's plain indices, named one by one (Elasticsearch refuses wildcard deletes).

    Data streams stay: the stack's Elasticsearch (the integ-test distribution) has no handler
    for deleting one, and their write index cannot be deleted alone.
    """
    found = es_request("GET", f"/_resolve/index/{pattern}")
    names = [i["name"] for i in found.get("indices", []) if not i.get("data_stream")]
    if names:
        es_request("DELETE", "/" + ",".join(names))
