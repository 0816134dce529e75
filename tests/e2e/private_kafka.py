"""A private single-node Kafka broker for fault tests, from the jars ``stack/`` installed.

Outage tests stop and start the broker; doing that to the shared stack broker would break every
test running beside them, so they get their own broker on free ports with a temp data dir. It
runs the same jars and main class as ``stack/stackctl/kafka.py`` (install with
``bash stack/up kafka``); only ports and directories differ.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from bench.subprocs import kill_group, spawn, terminate
from tests import stackenv
from tests.gateway_process import REPO_ROOT, free_port
from tests.waiting import wait_for


def _kafka_version() -> str:
    env = os.environ.get("TG_STACK_KAFKA_VERSION")
    if env:
        return env
    text = (REPO_ROOT / "stack" / "ports.env").read_text()
    m = re.search(r"TG_STACK_KAFKA_VERSION=\$\{TG_STACK_KAFKA_VERSION:-([^}]+)\}", text)
    assert m, "stack/ports.env has no TG_STACK_KAFKA_VERSION"
    return m.group(1)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    exe = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not exe:
        pytest.fail("no java on PATH (Kafka needs Java 17+)", pytrace=False)
    return exe


class PrivateKafka:
    """One KRaft node (broker + controller) on two free loopback ports; stop/start keeps its data."""

    def __init__(self) -> None:
        self.home = stackenv.STACK_CACHE / "kafka" / _kafka_version()
        if not (self.home / "libs").is_dir():
            pytest.fail(f"Kafka is not installed at {self.home}; run `bash stack/up kafka`", pytrace=False)
        self._tmp = tempfile.TemporaryDirectory(prefix="tg-kafka-")
        self.dir = Path(self._tmp.name)
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        props = self.dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.dir / 'data'}",
            "num.partitions=3",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]))
        self._props = props
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run([_java(), *self._log_opts(), "-cp", self._classpath(), "kafka.tools.StorageTool",
                        "format", "-t", cluster_id, "-c", str(props)],
                       check=True, capture_output=True, timeout=120)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _classpath(self) -> str:
        return f"{self.home / 'libs'}/*"

    def _log_opts(self) -> list[str]:
        log4j = self.home / "log4j2.properties"
        return [f"-Dlog4j2.configurationFile={log4j}"] if log4j.is_file() else []

    @property
    def log_path(self) -> Path:
        return self.dir / f"kafka-{self.starts}.log"

    def start(self, within: float = 90.0) -> PrivateKafka:
        """Spawn the broker and wait until it listens."""
        self.spawn()
        return self.wait_listening(within)

    def spawn(self) -> None:
        """Spawn the broker without waiting (it needs seconds to listen)."""
        self.starts += 1
        self.proc = spawn([_java(), "-Xms256m", "-Xmx512m", *self._log_opts(), "-cp", self._classpath(),
                           "kafka.Kafka", str(self._props)], self.log_path)

    def wait_listening(self, within: float = 90.0) -> PrivateKafka:
        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"private Kafka exited {self.proc.returncode}:\n{self.log()}")
            return stackenv._listening(self.bootstrap)

        wait_for(listening, within=within, what=f"private Kafka on {self.bootstrap}")
        return self

    def stop(self, within: float = 60.0) -> None:
        """Controlled shutdown (SIGTERM); the data dir stays for the next ``start``."""
        if self.proc is not None:
            terminate(self.proc, within, group=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else "(no log)"

    def cleanup(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
        self._tmp.cleanup()
