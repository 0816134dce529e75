"""Elasticsearch from its integ-test zip on Maven Central, single node, security off.

The integ-test distribution is the server plus the modules ``transport-netty4``, ``apm``,
``x-pack-core`` and ``x-pack-security`` and nothing else (checked on 9.5.3). So, compared with
a full distribution, it has no data-streams module, no ingest pipelines (``ingest-common``), no
painless scripting, no ``reindex``/``_update_by_query``/``_delete_by_query``, no
``mapper-extras`` (``match_only_text``, ``scaled_float``), no ``analysis-common`` token filters,
no ILM and no x-pack field types (``constant_keyword``, ``wildcard``, ``unsigned_long``).
See stack/README.md for what that means for the sink (what was verified against the node).

Elasticsearch refuses to run as root; as root we start it as a system user through ``setpriv``,
after letting that user search (not read) the directories above the cache (see access.py).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from . import access, maven, probes
from .procs import Unit
from .service import Health, Service

_JDK_GLOB = "/usr/lib/jvm/temurin-*"


def es_java_home() -> str:
    """The newest Temurin JDK under /usr/lib/jvm (Elasticsearch 9 wants 21+), or $ES_JAVA_HOME."""
    if os.environ.get("ES_JAVA_HOME"):
        return os.environ["ES_JAVA_HOME"]

    def version(p: Path) -> int:
        m = re.search(r"(\d+)", p.name)
        return int(m.group(1)) if m else 0

    jdks = sorted(Path(_JDK_GLOB).parent.glob(Path(_JDK_GLOB).name), key=version)
    if not jdks or version(jdks[-1]) < 21:
        raise RuntimeError(f"no JDK 21+ matches {_JDK_GLOB}; set ES_JAVA_HOME to one")
    return str(jdks[-1])


def _extract(archive: Path, into: Path) -> None:
    """Unzip keeping the Unix modes (zipfile alone drops the executable bits of bin/)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, into))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                path.chmod(mode & 0o777)


def secured_settings(host: str, http_port: int, transport_port: int, base: Path) -> str:
    """``elasticsearch.yml`` of the secured variant: x-pack security on, HTTPS with the PEM files
    ``http.crt`` / ``http.key`` / ``ca.crt`` in its config directory, file-realm users (added with
    ``bin/elasticsearch-users``) and API keys. Single node, so the transport stays plaintext on
    loopback. ``base`` holds its data, logs and tmp: it runs beside the stack's open node."""
    return "\n".join([
        "cluster.name: telemetry-gateway-secured",
        "node.name: secured-es-1",
        f"network.host: {host}",
        f"http.port: {http_port}",
        f"transport.port: {transport_port}",
        "discovery.type: single-node",
        f"path.data: {base / 'data'}",
        f"path.logs: {base / 'logs'}",
        "xpack.security.enabled: true",
        "xpack.security.http.ssl.enabled: true",
        "xpack.security.http.ssl.certificate: http.crt",
        "xpack.security.http.ssl.key: http.key",
        "xpack.security.http.ssl.certificate_authorities: [ca.crt]",
        "xpack.security.transport.ssl.enabled: false",
        "xpack.security.authc.api_key.enabled: true",
        "action.destructive_requires_name: false",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        "",
    ])


class Elasticsearch(Service):
    name = "elasticsearch"

    @property
    def base(self) -> Path:
        return self.s.cache / "elasticsearch"

    @property
    def home(self) -> Path:
        return self.base / f"elasticsearch-{self.s.es_version}"

    def _as_user(self) -> bool:
        return os.geteuid() == 0

    def install(self) -> None:
        if (self.home / "bin" / "elasticsearch").exists():
            return
        print(f"elasticsearch: fetching the {self.s.es_version} integ-test distribution (130 MB)", flush=True)
        dist = self.base / "dist"
        archive = maven.copy_artifact(
            self.s, "elasticsearch",
            f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.s.es_version}:zip", dist)
        print(f"elasticsearch: unpacking into {self.home}", flush=True)
        tmp = self.base / "unpack.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _extract(archive, tmp)
        (tmp / self.home.name).rename(self.home)
        shutil.rmtree(tmp)
        shutil.rmtree(dist)  # Maven's local repository keeps the archive

    def units(self) -> list[Unit]:
        argv = [str(self.home / "bin" / "elasticsearch")]
        if self._as_user():
            argv = ["setpriv", f"--reuid={self.s.es_user}", f"--regid={self.s.es_user}", "--init-groups",
                    "--", *argv]
        env = {"ES_JAVA_HOME": es_java_home(), "ES_PATH_CONF": str(self.base / "config"),
               "ES_TMPDIR": str(self.base / "tmp")}
        return [self.unit("elasticsearch", argv, env=env, cwd=self.base)]

    def ports(self) -> list[int]:
        return [self.s.es_port, self.s.es_transport_port]

    def endpoints(self) -> str:
        return f"http://{self.s.host}:{self.s.es_port}"

    def _ensure_user(self) -> None:
        user = self.s.es_user
        if subprocess.run(["id", "-u", user], capture_output=True).returncode == 0:
            return
        print(f"elasticsearch: creating system user {user} (it refuses to run as root)", flush=True)
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", user], check=True)

    def prepare(self) -> None:
        config = self.base / "config"
        if not config.exists():
            shutil.copytree(self.home / "config", config)
        (config / "elasticsearch.yml").write_text("\n".join([
            "cluster.name: telemetry-gateway-stack",
            "node.name: stack-es-1",
            f"network.host: {self.s.host}",
            f"http.port: {self.s.es_port}",
            f"transport.port: {self.s.es_transport_port}",
            "discovery.type: single-node",
            f"path.data: {self.base / 'data'}",
            f"path.logs: {self.base / 'logs'}",
            "xpack.security.enabled: false",
            # Tests clean up with wildcard deletes; the disk of a dev box is not a cluster's.
            "action.destructive_requires_name: false",
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "",
        ]))
        (config / "jvm.options.d").mkdir(exist_ok=True)
        heap = self.s.es_heap
        (config / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap}\n-Xmx{heap}\n")
        for d in ("data", "logs", "tmp"):
            (self.base / d).mkdir(exist_ok=True)
        if self._as_user():
            self._ensure_user()
            for d in ("config", "data", "logs", "tmp"):
                subprocess.run(["chown", "-R", f"{self.s.es_user}:{self.s.es_user}", str(self.base / d)],
                               check=True)
            uid = pwd.getpwnam(self.s.es_user).pw_uid
            for opened in access.grant_path(self.base, uid):
                print(f"elasticsearch: ACL lets {self.s.es_user} search (not list) {opened}", flush=True)

    def health(self) -> Health:
        try:
            h = probes.http_json(f"{self.endpoints()}/_cluster/health")
        except (OSError, ValueError) as exc:
            return Health(False, str(exc)[:120])
        return Health(h["status"] in ("green", "yellow"), f"cluster {h['status']}")
