"""VictoriaLogs (Apache-2.0), single node: the OTLP log store the forwarding sink is tested against.

Built with ``go install`` into ``$CACHE/bin`` (its module has no ``replace`` directive, so no
throwaway module is needed as for Jaeger), with Go's module and build caches in the stack cache.
It takes OTLP/HTTP protobuf logs at ``/insert/opentelemetry/v1/logs`` (JSON is refused) and
answers LogsQL at ``/select/logsql/query``; resource attributes become stream fields, so
``tenant.id`` can be filtered on.
"""

from __future__ import annotations

import shutil

from . import probes
from .procs import Unit, run_logged
from .service import Health, Service
from .settings import Settings

_PACKAGE = "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs"


def build(s: Settings) -> None:
    if s.victorialogs_bin.exists():
        return
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not on PATH (needed to build VictoriaLogs)")
    print(f"victorialogs: building VictoriaLogs {s.victorialogs_version} with go install "
          "(downloads its modules, then compiles: about a minute or two on two cores)", flush=True)
    s.victorialogs_bin.parent.mkdir(parents=True, exist_ok=True)
    env = {"GOMODCACHE": str(s.cache / "go" / "mod"), "GOCACHE": str(s.cache / "go" / "build"),
           "GOBIN": str(s.victorialogs_bin.parent), "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    run_logged([go, "install", "-v", f"{_PACKAGE}@{s.victorialogs_version}"],
               s.log_dir / "install-victorialogs.log", "compiling victoria-logs", env=env, cwd=s.cache)


class VictoriaLogs(Service):
    name = "victorialogs"

    def install(self) -> None:
        build(self.s)

    def units(self) -> list[Unit]:
        s = self.s
        data = s.cache / "victorialogs" / "data"
        argv = [str(s.victorialogs_bin), f"-httpListenAddr={s.host}:{s.victorialogs_port}",
                f"-storageDataPath={data}", "-retentionPeriod=2d", "-loggerLevel=WARN"]
        return [self.unit("victorialogs", argv, cwd=s.cache / "victorialogs")]

    def prepare(self) -> None:
        (self.s.cache / "victorialogs" / "data").mkdir(parents=True, exist_ok=True)

    def ports(self) -> list[int]:
        return [self.s.victorialogs_port]

    def endpoints(self) -> str:
        return f"http://{self.s.host}:{self.s.victorialogs_port} (OTLP /insert/opentelemetry/v1/logs)"

    def health(self) -> Health:
        status, body = probes.http_get(f"http://{self.s.host}:{self.s.victorialogs_port}/health")
        if status != 200:
            return Health(False, f"health {status or body.decode(errors='replace')[:100]}")
        return Health(True, "ready")
