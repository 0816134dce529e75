"""The container image, built from the repository with podman and run as a user would.

Built from the Dockerfile on the debootstrap base deploy/tools/up makes (no registry is reachable
here), with the machine's CA bundle as the optional build secret. Then: non-root, no compiler or
tests inside, at most 250 MB over its base; run with the OTLP ports published on free loopback
ports, the OpenTelemetry SDK's exporters send all three signals over gRPC and HTTP, the data is
read back from the file sink inside the container, and `podman stop` ends it with exit code 0
within the drain time. Podman's storage is cached, so a rebuild reuses the dependency layers.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.deploy.tools import BASE_IMAGE, INSTALL, podman_env, run, tool
from tests.e2e.kafka_pipeline import Clients
from tests.gateway_process import REPO_ROOT, GatewayProcess, free_port, sink_items
from tests.waiting import wait_for

# A cold build takes minutes on a busy 2-core machine; pytest's 300 s default would cut it.
pytestmark = pytest.mark.timeout(900)

IMAGE = "localhost/telemetry-gateway:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_OVER_BASE = 250 * 1000 * 1000
# SIGTERM: answer what is in flight (5 s), flush the batches, flush the file sink (10 s).
DRAIN_S = 15.0
DATA = "/var/lib/telemetry-gateway/data/default"


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> Any:
    return run([tool("podman"), *args], env=podman_env(), timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image() -> str:
    env = podman_env()
    if run([tool("podman"), "image", "exists", BASE_IMAGE], env=env, check=False).returncode != 0:
        pytest.fail(f"base image {BASE_IMAGE} missing; run `{INSTALL}`", pytrace=False)
    secret = ["--secret", f"id=pip_ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    started = time.monotonic()
    podman("build", "--format", "docker", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", *secret,
           "-t", IMAGE, str(REPO_ROOT), timeout=900)
    print(f"image built in {time.monotonic() - started:.0f}s")
    return IMAGE


def _inspect(ref: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(podman("image", "inspect", ref).stdout)[0])


def test_image_shape(image: str) -> None:
    info = _inspect(image)
    cfg = info["Config"]
    assert cfg.get("User") == "10001:10001", f"image user: {cfg.get('User')!r}"
    entry = (cfg["Entrypoint"], cfg["Cmd"])
    assert entry == (["telemetry-gateway"], ["run"]), entry
    assert {"4317/tcp", "4318/tcp", "8888/tcp"} <= set(cfg["ExposedPorts"]), cfg["ExposedPorts"]
    health = info.get("Healthcheck") or cfg.get("Healthcheck")
    assert health and "healthcheck.py" in " ".join(health["Test"]), health
    over = info["Size"] - _inspect(BASE_IMAGE)["Size"]
    print(f"image size {info['Size'] / 1e6:.0f} MB, {over / 1e6:.0f} MB over the base")
    assert over <= MAX_OVER_BASE, f"{over / 1e6:.0f} MB over the base (at most {MAX_OVER_BASE / 1e6:.0f})"
    # No compiler, no sources, no tests, and the CA secret not baked in.
    probe = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc || true; ls -d /src /run/secrets/pip_ca 2>/dev/null || true; "
                   "python3 -c 'import importlib.util as u; print(u.find_spec(\"tests\"))'; "
                   "telemetry-gateway pipelines --help >/dev/null && echo pipelines-ok")
    assert probe.stdout.split() == ["None", "pipelines-ok"], probe.stdout


class _Endpoint:
    """What ``Clients`` needs of a gateway: its published OTLP addresses."""

    def __init__(self, grpc_port: int, http_port: int) -> None:
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.http_url = f"http://127.0.0.1:{http_port}"


@pytest.fixture
def container(image: str) -> Iterator[tuple[str, _Endpoint, int]]:
    name = f"tg-test-{uuid.uuid4().hex[:8]}"
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{grpc_port}:4317",
           "-p", f"127.0.0.1:{http_port}:4318", "-p", f"127.0.0.1:{admin_port}:8888", image)
    try:
        yield name, _Endpoint(grpc_port, http_port), admin_port
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_run_send_read_back_stop(container: tuple[str, _Endpoint, int]) -> None:
    name, endpoint, admin_port = container

    def ready() -> bool:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"container {state}:\n{podman('logs', name, check=False).stdout}"
        return _status(f"http://127.0.0.1:{admin_port}/readyz") == 200
    wait_for(ready, within=30, what=f"/readyz of container {name}")
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    podman("healthcheck", "run", name)

    clients = Clients(cast(GatewayProcess, endpoint))
    for transport in ("grpc", "http"):
        assert clients.spans(transport) and clients.logs(transport) and clients.metrics(transport), transport

    def landed() -> bool:
        out = {}
        for signal, key in (("traces", "name"), ("logs", "body")):
            text = podman("exec", name, "sh", "-c", f"cat {DATA}/{signal}*.jsonl 2>/dev/null || true").stdout
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            items = sink_items(lines, signal)
            out[signal] = {str(item["name"]) if key == "name" else str(item[key].get("stringValue"))
                           for _, item in items}
        return set(clients.sent.spans) <= out["traces"] and set(clients.sent.logs) <= out["logs"]
    wait_for(landed, within=20, what="the SDK's spans and logs in the container's file sink")

    started = time.monotonic()
    podman("stop", "-t", str(int(DRAIN_S) + 5), name, timeout=60)
    took = time.monotonic() - started
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert code == "0", f"exit code {code}:\n{podman('logs', name, check=False).stderr}"
    assert took < DRAIN_S, f"stop took {took:.1f}s, over the {DRAIN_S:.0f}s drain"
