"""Prometheus from Debian's package, started by hand (not as the package's service) with the
remote-write receiver, native histograms and exemplar storage, its TSDB in the cache.

Installing the package may enable (and on a systemd host start) its own service, which would
take port 9090; the install step stops and disables it. Recommends (the node exporter) are not
installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from . import probes
from .procs import Unit, run_logged
from .service import Health, Service

_SERVICES = ("prometheus", "prometheus-node-exporter")


class Prometheus(Service):
    name = "prometheus"

    def install(self) -> None:
        if self.s.prometheus_bin.exists():
            return
        if os.geteuid() != 0:
            raise RuntimeError(f"{self.s.prometheus_bin} is missing; install Debian's package: "
                               "sudo apt-get update && "
                               "sudo apt-get install -y --no-install-recommends prometheus")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        log = self.s.log_dir / "install-prometheus.log"
        print("prometheus: installing Debian's prometheus package", flush=True)
        run_logged(["apt-get", "update", "-q"], log, "apt-get update", env=env)
        run_logged(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], log,
                   "apt-get install prometheus", env=env)
        self._quiet_package_services()

    def _quiet_package_services(self) -> None:
        """Stop and disable the package's own services so only ours binds the port."""
        for svc in _SERVICES:
            if shutil.which("systemctl"):
                subprocess.run(["systemctl", "disable", "--now", f"{svc}.service"], capture_output=True)
            if shutil.which("invoke-rc.d"):
                subprocess.run(["invoke-rc.d", svc, "stop"], capture_output=True)

    def units(self) -> list[Unit]:
        base = self.s.cache / "prometheus"
        argv = [str(self.s.prometheus_bin), f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}", "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={self.s.host}:{self.s.prometheus_port}",
                "--web.enable-remote-write-receiver",
                # Without exemplar storage, remote-written exemplars are accepted and thrown away.
                "--enable-feature=native-histograms,exemplar-storage",
                "--web.enable-admin-api", "--web.enable-lifecycle"]
        return [self.unit("prometheus", argv, cwd=base)]

    def ports(self) -> list[int]:
        return [self.s.prometheus_port]

    def endpoints(self) -> str:
        return f"http://{self.s.host}:{self.s.prometheus_port}"

    def prepare(self) -> None:
        base = self.s.cache / "prometheus"
        (base / "data").mkdir(parents=True, exist_ok=True)
        # Nothing is scraped: series arrive by remote write only. The out-of-order window lets a
        # pipeline redeliver a batch a little late without the samples being refused.
        (base / "prometheus.yml").write_text(
            "global:\n  evaluation_interval: 15s\n"
            "storage:\n  tsdb:\n    out_of_order_time_window: 30m\n"
            "scrape_configs: []\n")

    def health(self) -> Health:
        status, body = probes.http_get(f"{self.endpoints()}/-/ready")
        if status != 200:
            return Health(False, f"/-/ready: {status or body.decode(errors='replace')[:100]}")
        try:
            version = probes.http_json(f"{self.endpoints()}/api/v1/status/buildinfo")["data"]["version"]
        except (OSError, ValueError, KeyError) as exc:
            return Health(False, f"buildinfo: {exc}")
        return Health(True, f"ready, version {version}")
