"""The stack's stores with security on, started privately for a test module beside the open ones.

- ``secured_prometheus``: the stack's Prometheus binary and flags, plus ``--web.config.file``
  (TLS and basic auth), on free ports;
- ``secured_jaeger``: the stack's Jaeger binary with its OTLP/gRPC receiver behind TLS that
  requires a client certificate (mTLS), memory storage, query API on a free port;
- ``secured_elasticsearch``: the stack's Elasticsearch distribution with ``xpack.security``,
  HTTPS and a file-realm user, its own config and data in a temp dir (``stackctl.es_secured``).

The open services other tests use are never touched. Certificates come from ``tests.tls_certs``
(trustme), passwords are random per run.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import secrets
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackctl import jaeger

from bench.subprocs import free_ports, kill_group, spawn
from tests import stackenv
from tests.tls_certs import Pair, Pki
from tests.waiting import wait_for

HOST = "127.0.0.1"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")


@dataclass
class Store:
    """Where a secured store listens and how to reach it as a client."""

    url: str  # https://127.0.0.1:<port> (Prometheus, Elasticsearch) or host:port (Jaeger OTLP)
    pki: Pki
    user: str = ""
    password: str = ""
    query_url: str = ""  # Jaeger's query API (plain HTTP, loopback)
    client: Pair | None = None  # a client certificate the store accepts (Jaeger mTLS)
    log: Path | None = None

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_file))

    def get_json(self, path: str, *, password: str | None = None) -> Any:
        """GET ``url + path`` over TLS with basic auth; the parsed body, or None when refused."""
        token = base64.b64encode(f"{self.user}:{self.password if password is None else password}".encode())
        req = urllib.request.Request(self.url + path, headers={"Authorization": "Basic " + token.decode()})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl()) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def status(self, path: str, password: str) -> int:
        token = base64.b64encode(f"{self.user}:{password}".encode())
        req = urllib.request.Request(self.url + path, headers={"Authorization": "Basic " + token.decode()})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl()) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code


def _bcrypt(password: str) -> str:
    """A bcrypt hash ($2b$), which Prometheus' web config wants, from the system's libxcrypt
    (Python's own ``crypt`` module goes away in 3.13)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 10, None, 0)
    hashed = lib.crypt(password.encode(), salt)
    assert salt and hashed and hashed.startswith(b"$2b$"), "libcrypt cannot make bcrypt hashes"
    return str(hashed.decode())


@contextmanager
def secured_prometheus(directory: Path, pki: Pki) -> Iterator[Store]:
    """Prometheus with the remote-write receiver behind TLS and basic auth."""
    (port,) = free_ports(1)
    server = pki.server()
    user, password = "tg-writer", secrets.token_urlsafe(18)
    (directory / "prometheus.yml").write_text(
        "global:\n  evaluation_interval: 15s\n"
        "storage:\n  tsdb:\n    out_of_order_time_window: 30m\n"
        "scrape_configs: []\n")
    (directory / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
        f"basic_auth_users:\n  {user}: '{_bcrypt(password)}'\n")
    argv = [str(PROMETHEUS_BIN), f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={HOST}:{port}",
            f"--web.config.file={directory / 'web.yml'}", "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms,exemplar-storage"]
    log = directory / "prometheus.log"
    proc = spawn(argv, log)
    store = Store(f"https://{HOST}:{port}", pki, user, password, log=log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            return store.status("/-/ready", password) == 200 if _listening(port) else False
        wait_for(ready, within=60, interval=0.2, what="the secured Prometheus ready over TLS")
        yield store
    finally:
        kill_group(proc)


@contextmanager
def secured_jaeger(directory: Path, pki: Pki) -> Iterator[Store]:
    """Jaeger whose OTLP/gRPC receiver takes TLS with a client certificate only (mTLS)."""
    otlp, query, query_grpc, health = free_ports(4)
    server = pki.server()
    config = directory / "jaeger.yaml"
    config.write_text(jaeger.config_text(
        HOST, jaeger.JaegerPorts(otlp, None, query, query_grpc, health, None),
        {"cert_file": str(server.cert), "key_file": str(server.key), "client_ca_file": str(pki.ca_file)}))
    log = directory / "jaeger.log"
    proc = spawn([str(stackenv.require_binary(stackenv.JAEGER_BIN)), "--config", str(config)], log)
    store = Store(f"{HOST}:{otlp}", pki, query_url=f"http://{HOST}:{query}",
                  client=pki.client("tg-pipelines"), log=log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"jaeger exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{store.query_url}/api/services", timeout=2) as resp:
                    return resp.status == 200 and _listening(otlp)
            except OSError:
                return False
        wait_for(ready, within=60, interval=0.2, what="the secured Jaeger ready")
        yield store
    finally:
        kill_group(proc)


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


@contextmanager
def secured_elasticsearch(pki: Pki, heap: str = "512m") -> Iterator[Store]:
    """The stack's Elasticsearch distribution as a second node with security on (HTTPS, a
    superuser ``tg-writer`` in the file realm), in its own temp dir and ports.

    Run as the stack's system user (Elasticsearch refuses root), like the open node.
    """
    import os
    import shutil
    import subprocess

    from stackctl import elasticsearch as es

    es_user = _stack_default("TG_STACK_ES_USER")
    home = stackenv.STACK_CACHE / "elasticsearch" / f"elasticsearch-{_stack_default('TG_STACK_ES_VERSION')}"
    if not (home / "bin" / "elasticsearch").exists():
        import pytest

        pytest.fail(f"Elasticsearch is not installed at {home}; run `bash stack/up elasticsearch`",
                    pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="tg-es-secured-"))
    base.chmod(0o755)
    http_port, transport_port = free_ports(2)
    user, password = "tg-writer", secrets.token_urlsafe(18)
    config = base / "config"
    shutil.copytree(home / "config", config)
    (config / "elasticsearch.yml").write_text(es.secured_settings(HOST, http_port, transport_port, base))
    (config / "jvm.options.d").mkdir(exist_ok=True)
    (config / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap}\n-Xmx{heap}\n")
    server = pki.server()
    (config / "http.crt").write_bytes(server.cert.read_bytes())
    (config / "http.key").write_bytes(pkcs8(server.key.read_bytes()))
    (config / "ca.crt").write_bytes(pki.ca_file.read_bytes())
    for d in ("data", "logs", "tmp"):
        (base / d).mkdir()
    env = {**os.environ, "ES_JAVA_HOME": es.es_java_home(), "ES_PATH_CONF": str(config),
           "ES_TMPDIR": str(base / "tmp")}
    subprocess.run([str(home / "bin" / "elasticsearch-users"), "useradd", user, "-p", password,
                    "-r", "superuser"], env=env, check=True, capture_output=True)
    argv = [str(home / "bin" / "elasticsearch")]
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{es_user}:{es_user}", str(base)], check=True)
        argv = ["setpriv", f"--reuid={es_user}", f"--regid={es_user}", "--init-groups",
                "--", *argv]
    log = base / "es.log"
    proc = spawn(argv, log, env=env, cwd=base)
    store = Store(f"https://{HOST}:{http_port}", pki, user, password, log=log)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"secured elasticsearch exited:\n{log.read_text()[-4000:]}"
            h = store.get_json("/_cluster/health")
            return bool(h) and h.get("status") in ("green", "yellow")
        wait_for(healthy, within=180, interval=0.5, what="the secured Elasticsearch healthy over HTTPS")
        yield store
    finally:
        kill_group(proc)
        shutil.rmtree(base, ignore_errors=True)


def _stack_default(var: str) -> str:
    """A stack setting: the environment's, else its default in stack/ports.env."""
    import os
    import re

    if os.environ.get(var):
        return os.environ[var]
    text = (Path(__file__).resolve().parent.parent / "stack" / "ports.env").read_text()
    m = re.search(rf"{var}=\$\{{{var}:-([^}}]+)\}}", text)
    assert m, f"stack/ports.env has no {var}"
    return m.group(1)


def pkcs8(key_pem: bytes) -> bytes:
    """A PEM private key as unencrypted PKCS#8 (what Kafka's and Elasticsearch's PEM loaders take)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def post_json(store: Store, path: str, body: dict[str, Any]) -> Any:
    """POST JSON over TLS with the store's basic auth; the parsed answer."""
    token = base64.b64encode(f"{store.user}:{store.password}".encode()).decode()
    req = urllib.request.Request(store.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Basic " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30, context=store.ssl()) as resp:
        return json.loads(resp.read())
