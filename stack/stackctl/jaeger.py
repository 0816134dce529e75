"""Jaeger v2 all-in-one (memory storage) built from source with Go, plus telemetrygen.

Jaeger's module path has no ``/v2`` suffix, so the module proxy serves v2 only as v1 tags
(v1.76.0 is the commit of v2.13.0), and its go.mod carries a ``replace`` directive, which
``go install pkg@version`` refuses. So the binary is built inside a throwaway main module that
requires Jaeger, repeats its replace directives and starts from its go.sum (the proxy's checksum
database does not answer for every dependency). The same binary, run with a collector config,
is the OpenTelemetry Collector peer the benchmarks use, which is why it lands in ``$CACHE/bin``.

Every port Jaeger would open by default is moved: 4317/4318/8888 belong to the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import probes
from .procs import Unit, run_logged
from .service import Health, Service
from .settings import Settings

_MODULE = "github.com/jaegertracing/jaeger"
_TELEMETRYGEN = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"


def _go_env(s: Settings) -> dict[str, str]:
    return {"GOMODCACHE": str(s.cache / "go" / "mod"), "GOCACHE": str(s.cache / "go" / "build"),
            "GOFLAGS": "-buildvcs=false -mod=mod", "GOTOOLCHAIN": "local"}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not on PATH (needed to build Jaeger and telemetrygen)")
    return go


def build_jaeger(s: Settings) -> None:
    if s.jaeger_bin.exists():
        return
    work = s.cache / "go" / "jaeger-build"
    work.mkdir(parents=True, exist_ok=True)
    env = _go_env(s)
    log = s.log_dir / "install-jaeger.log"
    print(f"jaeger: building Jaeger {s.jaeger_version} from source (minutes on two cores)", flush=True)
    run_logged([_go(), "mod", "download", "-json", f"{_MODULE}@{s.jaeger_version}"], log,
               "downloading the Jaeger module", env=env, cwd=work)
    full_env = {**os.environ, **env}
    info = json.loads(subprocess.run([_go(), "mod", "download", "-json", f"{_MODULE}@{s.jaeger_version}"],
                                     capture_output=True, check=True, env=full_env, cwd=work).stdout)
    source = Path(info["Dir"])
    replaces = [line for line in (source / "go.mod").read_text().splitlines() if line.startswith("replace ")]
    go_line = next(line for line in (source / "go.mod").read_text().splitlines() if line.startswith("go "))
    (work / "go.mod").write_text("\n".join(["module stack.local/jaeger-build", "", go_line, "",
                                            f"require {_MODULE} {s.jaeger_version}", "", *replaces, ""]))
    (work / "go.sum").write_text((source / "go.sum").read_text())
    out = s.jaeger_bin.with_name(s.jaeger_bin.name + ".partial")
    run_logged([_go(), "build", "-v", "-o", str(out), f"{_MODULE}/cmd/jaeger"], log,
               "compiling jaeger", env=env, cwd=work)
    out.rename(s.jaeger_bin)


def build_telemetrygen(s: Settings) -> None:
    if s.telemetrygen_bin.exists():
        return
    print(f"jaeger: building telemetrygen {s.telemetrygen_version} (about a minute)", flush=True)
    s.telemetrygen_bin.parent.mkdir(parents=True, exist_ok=True)
    env = {**_go_env(s), "GOBIN": str(s.telemetrygen_bin.parent), "GOFLAGS": "-buildvcs=false"}
    run_logged([_go(), "install", "-v", f"{_TELEMETRYGEN}@{s.telemetrygen_version}"],
               s.log_dir / "install-telemetrygen.log", "compiling telemetrygen", env=env, cwd=s.cache)


@dataclass(frozen=True)
class JaegerPorts:
    otlp_grpc: int
    otlp_http: int | None  # None: no OTLP/HTTP receiver
    query: int
    query_grpc: int
    health: int
    metrics: int | None  # None: no self-metrics endpoint


def config_text(h: str, p: JaegerPorts, grpc_tls: Mapping[str, str] | None = None) -> str:
    """Jaeger's configuration: only what the tests need (OTLP in, memory store, query API,
    health; no jaeger/zipkin receivers, no remote sampling, no pprof: fewer ports to keep off
    ours). ``grpc_tls``: the OTLP/gRPC receiver's ``tls`` block (cert_file, key_file,
    client_ca_file), for the secured variant."""
    metrics = (f"""\
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: {h}
                port: {p.metrics}
""" if p.metrics is not None else """\
    metrics:
      level: none
""")
    tls = "".join(f"          {k}: {v}\n" for k, v in (grpc_tls or {}).items())
    grpc = f"        endpoint: {h}:{p.otlp_grpc}\n" + (f"        tls:\n{tls}" if tls else "")
    http = f"      http:\n        endpoint: {h}:{p.otlp_http}\n" if p.otlp_http is not None else ""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
{metrics}    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: {h}:{p.health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {h}:{p.query}
    grpc:
      endpoint: {h}:{p.query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
{grpc}{http}
processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger(Service):
    name = "jaeger"

    def install(self) -> None:
        build_jaeger(self.s)
        build_telemetrygen(self.s)

    @property
    def config_path(self) -> Path:
        return self.s.cache / "jaeger" / "config.yaml"

    def units(self) -> list[Unit]:
        return [self.unit("jaeger", [str(self.s.jaeger_bin), "--config", str(self.config_path)],
                          cwd=self.config_path.parent)]

    def ports(self) -> list[int]:
        s = self.s
        return [s.jaeger_otlp_grpc_port, s.jaeger_otlp_http_port, s.jaeger_query_port,
                s.jaeger_query_grpc_port, s.jaeger_health_port, s.jaeger_metrics_port]

    def endpoints(self) -> str:
        s = self.s
        grpc, http, query = s.jaeger_otlp_grpc_port, s.jaeger_otlp_http_port, s.jaeger_query_port
        return f"otlp {s.host}:{grpc}/{http}, query :{query}"

    def prepare(self) -> None:
        s = self.s
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text(
            s.host, JaegerPorts(s.jaeger_otlp_grpc_port, s.jaeger_otlp_http_port, s.jaeger_query_port,
                                s.jaeger_query_grpc_port, s.jaeger_health_port, s.jaeger_metrics_port)))

    def health(self) -> Health:
        status, body = probes.http_get(f"http://{self.s.host}:{self.s.jaeger_health_port}/status")
        if status != 200:
            return Health(False, f"health {status or body.decode(errors='replace')[:100]}")
        status, body = probes.http_get(f"http://{self.s.host}:{self.s.jaeger_query_port}/api/services")
        if status != 200:
            return Health(False, f"query API {status or body.decode(errors='replace')[:100]}")
        return Health(True, "ready, query API answers")
