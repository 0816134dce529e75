"""A private Kafka cluster (one node, or three replicating ones) for fault tests.

Fault tests stop, kill and restart brokers; doing that to the shared stack broker would break
every test running beside them, so they get their own nodes on free ports with temp data dirs.
The nodes are configured and started by ``stack/stackctl/kafka.py`` (the same properties, jars
and JVM command as ``bash stack/up [--kafka-brokers 3]``; install with ``bash stack/up kafka``):
a fault test proves something about the layout the stack runs only if it runs that layout.
Only ports, directories and heaps differ.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from stackctl import kafka, probes

from bench.subprocs import free_ports, kill_group, spawn, terminate_together
from tests import stackenv
from tests.gateway_process import REPO_ROOT
from tests.waiting import wait_for

HOST = "127.0.0.1"
T = TypeVar("T")


def _kafka_version() -> str:
    env = os.environ.get("TG_STACK_KAFKA_VERSION")
    if env:
        return env
    text = (REPO_ROOT / "stack" / "ports.env").read_text()
    m = re.search(r"TG_STACK_KAFKA_VERSION=\$\{TG_STACK_KAFKA_VERSION:-([^}]+)\}", text)
    assert m, "stack/ports.env has no TG_STACK_KAFKA_VERSION"
    return m.group(1)


@dataclass
class Node:
    """One KRaft node (broker and controller) of a private cluster."""

    id: int
    port: int
    controller_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def props(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.dir / f"kafka-{self.starts}.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(frozen=True)
class PartitionState:
    """Who leads a partition and which replicas are in sync, as the cluster's metadata says."""

    topic: str
    partition: int
    leader: int
    replicas: frozenset[int]
    isr: frozenset[int]


# Where a DescribeConfigs entry's value comes from: set on the topic itself (not a broker default).
TOPIC_CONFIG_SOURCE = 1


class PrivateKafka:
    """``brokers`` KRaft nodes on free loopback ports; stop/kill/start keep their data.

    Heaps are small (256-384 MiB a node) so a three-node cluster fits beside the shared stack
    and another test run on a 2-core machine.
    """

    def __init__(self, brokers: int = 1, heap: tuple[str, str] = ("256m", "384m"),
                 secure: kafka.SecureListeners | None = None) -> None:
        """``secure``: the stack's secured variant (one node): SASL_SSL and SSL listeners beside
        the open one (``stackctl.kafka.SecureListeners``)."""
        assert secure is None or brokers == 1, "the secured variant is one node"
        self.home = stackenv.STACK_CACHE / "kafka" / _kafka_version()
        if not (self.home / "libs").is_dir():
            pytest.fail(f"Kafka is not installed at {self.home}; run `bash stack/up kafka`", pytrace=False)
        self.heap = heap
        self._tmp = tempfile.TemporaryDirectory(prefix="tg-kafka-")
        self.dir = Path(self._tmp.name)
        ports = free_ports(2 * brokers)
        self.nodes = [Node(i, ports[2 * i - 2], ports[2 * i - 1], self.dir / f"node-{i}")
                      for i in range(1, brokers + 1)]
        self._log4j = kafka.write_log4j(self.dir / "log4j2.properties")
        cluster_id = kafka.new_cluster_id()
        addrs = [(n.port, n.controller_port) for n in self.nodes]
        try:
            formats = []
            for node in self.nodes:
                node.dir.mkdir()
                node.props.write_text(kafka.node_properties(node.id, HOST, addrs, node.dir / "data", secure))
                # The nodes' storage is formatted in parallel: each format is a JVM start.
                argv = kafka.format_argv(self.home, self._log4j, cluster_id, node.props,
                                         secure.format_args() if secure is not None else ())
                formats.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        except RuntimeError as exc:  # no java
            pytest.fail(f"{exc}; install a JDK 17 (Debian: `apt-get install openjdk-17-jre-headless`)",
                        pytrace=False)
        for node, proc in zip(self.nodes, formats, strict=True):
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"formatting node {node.id} failed:\n{out.decode(errors='replace')}"

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def _chosen(self, node_id: int | None) -> list[Node]:
        return self.nodes if node_id is None else [self.node(node_id)]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, within: float = 90.0) -> PrivateKafka:
        """Spawn every node and wait until the cluster serves metadata with all of them in it."""
        self.spawn()
        return self.wait_ready(within)

    def spawn(self, node_id: int | None = None) -> None:
        """Spawn one node (or all) without waiting: a JVM needs seconds to join its cluster."""
        for node in self._chosen(node_id):
            node.starts += 1
            node.proc = spawn(kafka.node_argv(self.home, self._log4j, node.props, self.heap), node.log_path)

    def wait_ready(self, within: float = 90.0, node_id: int | None = None) -> PrivateKafka:
        """Wait until each node asked answers metadata listing every live node, a controller elected.

        A listening port says little: a node listens before the controller has unfenced it.
        """
        want = sum(n.alive() for n in self.nodes)

        def ready() -> bool:
            for node in self._chosen(node_id):
                if not node.alive():
                    assert node.proc is not None, f"node {node.id} was never started"
                    rc = node.proc.returncode
                    raise AssertionError(f"Kafka node {node.id} exited {rc}:\n{self.log(node.id)}")
                try:
                    brokers, controller = probes.kafka_cluster(HOST, node.port, timeout=2.0)
                except OSError:
                    return False
                if brokers < want or controller < 0:
                    return False
            return True

        wait_for(ready, within=within, interval=0.2,
                 what=f"private Kafka {self.bootstrap} serving {want} node(s)")
        return self

    def stop(self, within: float = 60.0) -> None:
        """Controlled shutdown (SIGTERM) of every node at once; the data stays for the next ``start``."""
        terminate_together([n.proc for n in self.nodes if n.proc is not None], within)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, no leadership handed over (the crash case)."""
        node = self.node(node_id)
        assert node.proc is not None and node.alive(), f"node {node_id} is not running"
        kill_group(node.proc)

    # -- what the cluster says ----------------------------------------------------------------
    def partitions(self, topics: Sequence[str]) -> list[PartitionState]:
        """Leader, replicas and in-sync replicas of every partition of ``topics`` (metadata request)."""
        async def ask(admin: AIOKafkaAdminClient) -> list[PartitionState]:
            out: list[PartitionState] = []
            for t in await admin.describe_topics(list(topics)):
                assert t["error_code"] == 0, f"metadata of {t['topic']}: error {t['error_code']}"
                out.extend(PartitionState(t["topic"], p["partition"], p["leader"], frozenset(p["replicas"]),
                                          frozenset(p["isr"])) for p in t["partitions"])
            return out

        return asyncio.run(self._admin(ask))

    def topic_config(self, topic: str, key: str) -> tuple[str, int]:
        """(value, config source) of one setting of ``topic``; source 1 means set on the topic."""
        async def ask(admin: AIOKafkaAdminClient) -> tuple[str, int]:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})
            (resp,) = await admin.describe_configs([resource])
            (entry,) = resp.to_object()["resources"][0]["config_entries"]
            return entry["config_value"], entry["config_source"]

        return asyncio.run(self._admin(ask))

    async def _admin(self, ask: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
        live = ",".join(n.address for n in self.nodes if n.alive())
        admin = AIOKafkaAdminClient(bootstrap_servers=live, request_timeout_ms=10_000)
        await admin.start()
        try:
            return await ask(admin)
        finally:
            await admin.close()

    def log(self, node_id: int | None = None) -> str:
        return "\n".join(f"--- node {n.id} ({n.log_path}) ---\n" + (
            n.log_path.read_text(errors="replace")[-4000:] if n.log_path.exists() else "(no log)")
            for n in self._chosen(node_id))

    def cleanup(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                kill_group(node.proc)
        self._tmp.cleanup()
