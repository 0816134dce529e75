"""Where the deploy tests find their tools: what ``bash deploy/tools/up`` installs, once, into
``${XDG_CACHE_HOME:-$HOME/.cache}/telemetry-gateway/deploy-tools`` (``TG_DEPLOY_TOOLS`` overrides).

A missing tool fails the test with the command that installs it; nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.gateway_process import REPO_ROOT

TOOLS = Path(
    os.environ.get("TG_DEPLOY_TOOLS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "telemetry-gateway" / "deploy-tools"
)
INSTALL = "bash deploy/tools/up"
KUBE_VERSION = "1.34.0"
BASE_IMAGE = "localhost/debian:bookworm"
CHART = REPO_ROOT / "deploy" / "helm" / "telemetry-gateway"


def tool(name: str) -> str:
    """The path of ``name``: the cache's bin/ first (helm, kubeconform), then PATH."""
    cached = TOOLS / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `{INSTALL}`", pytrace=False)
    return found


def podman_env() -> dict[str, str]:
    """The environment podman runs with here: the settings and storage deploy/tools/up wrote."""
    conf = TOOLS / "containers" / "containers.conf"
    storage = TOOLS / "containers" / "storage.conf"
    if not conf.is_file() or not storage.is_file():
        pytest.fail(f"podman settings missing under {TOOLS / 'containers'}; run `{INSTALL}`", pytrace=False)
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def helm_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120.0,
        check: bool = True, cwd: Path = REPO_ROOT,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; with ``check`` a non-zero exit fails the test quoting the command and its output."""
    proc = subprocess.run(list(args), env=dict(env) if env is not None else None, cwd=cwd,
                          input=stdin.decode() if stdin is not None else None,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` exited {proc.returncode}:\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    return proc
