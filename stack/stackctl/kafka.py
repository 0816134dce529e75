"""Kafka in KRaft mode from Maven Central jars: one node, or a replicated three-node cluster.

Each layout has its own data directory (cluster ids differ), so switching between
``--kafka-brokers 1`` and ``3`` never needs a wipe. Every node is broker and controller.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import maven, probes
from .procs import Unit, run_logged, running_pid
from .service import Health, Service
from .settings import Settings

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    exe = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not exe:
        raise RuntimeError("no java on PATH (Kafka needs Java 17+)")
    return exe


# The layout of a KRaft node, shared by the stack's brokers and the private clusters that fault
# tests start and kill (tests/e2e/private_kafka.py): a fault test proves what the stack runs only
# if both write the same configuration and start the same way.

def new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: a url-safe base64 UUID without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def write_log4j(path: Path) -> Path:
    path.write_text(_LOG4J2)
    return path


@dataclass(frozen=True)
class SecureListeners:
    """The secured variant: two listeners beside the open PLAINTEXT one (which stays, for the
    brokers among themselves and for every client that needs no security).

    - SASL_SSL on ``sasl_ssl_port``: TLS with ``keystore`` (PEM: a PKCS#8 key, then the
      certificate chain), then SASL PLAIN (``plain_users``) or SCRAM-SHA-256/512
      (``scram_users``, stored in the cluster metadata when the storage is formatted);
    - SSL on ``ssl_port``: TLS requiring a client certificate signed by ``truststore`` (PEM CAs).
    """

    sasl_ssl_port: int
    ssl_port: int
    keystore: Path
    truststore: Path
    plain_users: Mapping[str, str] = field(default_factory=dict)
    scram_users: Mapping[str, str] = field(default_factory=dict)

    def listeners(self, host: str) -> list[str]:
        return [f"SASL_SSL://{host}:{self.sasl_ssl_port}", f"SSL://{host}:{self.ssl_port}"]

    def properties(self) -> list[str]:
        plain = " ".join(f'user_{name}="{password}"' for name, password in self.plain_users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.truststore}",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_ssl.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
            "listener.name.ssl.ssl.client.auth=required",
        ]

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that store the SCRAM users (both mechanisms)."""
        out = []
        for name, password in self.scram_users.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                out += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return out


def node_properties(node: int, host: str, ports: Sequence[tuple[int, int]], data: Path,
                    secure: SecureListeners | None = None) -> str:
    """``server.properties`` of node ``node`` (1-based) of a cluster whose nodes listen on ``ports``.

    ``ports`` holds (broker port, controller port) of every node. Every node is broker and
    controller. Replication follows the node count: every topic on every node, and a majority of
    the replicas in sync before ``acks=all`` answers, so a cluster of three keeps taking writes
    with one node down and loses nothing it acknowledged. ``secure`` (one node) adds the
    secured listeners beside the open one.
    """
    n = len(ports)
    isr = n // 2 + 1
    voters = ",".join(f"{i}@{host}:{ctl}" for i, (_, ctl) in enumerate(ports, start=1))
    port, controller = ports[node - 1]
    extra = secure.listeners(host) if secure is not None else []
    protocols = ",SASL_SSL:SASL_SSL,SSL:SSL" if secure is not None else ""
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners={','.join([f'PLAINTEXT://{host}:{port}', *extra, f'CONTROLLER://{host}:{controller}'])}",
        f"advertised.listeners={','.join([f'PLAINTEXT://{host}:{port}', *extra])}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{protocols}",
        *(secure.properties() if secure is not None else []),
        f"log.dirs={data}",
        "num.partitions=3",
        f"default.replication.factor={n}",
        f"min.insync.replicas={isr}",
        f"offsets.topic.replication.factor={n}",
        f"transaction.state.log.replication.factor={n}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={n}",
        f"share.coordinator.state.topic.min.isr={isr}",
        "auto.create.topics.enable=true",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "",
    ])


def format_argv(home: Path, log4j: Path, cluster_id: str, props: Path,
                extra: Sequence[str] = ()) -> list[str]:
    """The command that initialises a node's storage (once, before its first start); ``extra``:
    more ``format`` arguments (``SecureListeners.format_args``)."""
    return [java(), f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{home / 'libs'}/*",
            # ``--cluster-id=ID`` in one word: an id may start with "-" (base64url), which argparse
            # would take for an option when it is a separate word.
            "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props), *extra]


def node_argv(home: Path, log4j: Path, props: Path, heap: tuple[str, str]) -> list[str]:
    """The command that runs one node; ``heap`` is (-Xms, -Xmx)."""
    return [java(), f"-Xms{heap[0]}", f"-Xmx{heap[1]}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{home / 'libs'}/*", "kafka.Kafka", str(props)]


class Kafka(Service):
    name = "kafka"

    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        super().__init__(settings)
        self.brokers = brokers if brokers is not None else self.running_layout()
        if self.brokers not in (1, 3):
            raise SystemExit("stack: --kafka-brokers must be 1 or 3")

    @property
    def home(self) -> Path:
        return self.s.cache / "kafka" / self.s.kafka_version

    def _ports(self, brokers: int) -> list[int]:
        return [self.s.kafka_port] if brokers == 1 else list(self.s.kafka_cluster_ports)

    def _layout_dir(self, brokers: int) -> Path:
        return self.s.cache / "kafka" / f"layout-{brokers}"

    def _unit_name(self, brokers: int, node: int) -> str:
        return "kafka" if brokers == 1 else f"kafka-{node}"

    def _units(self, brokers: int) -> list[Unit]:
        units = []
        for node, _ in enumerate(self._ports(brokers), start=1):
            props = self._layout_dir(brokers) / f"node-{node}" / "server.properties"
            argv = node_argv(self.home, self._log4j, props, self.s.kafka_heap)
            units.append(self.unit(self._unit_name(brokers, node), argv))
        return units

    def units(self) -> list[Unit]:
        return self._units(self.brokers)

    def all_units(self) -> list[Unit]:
        return self._units(1) + self._units(3)

    def stop_grace(self) -> float:
        """Short when a cluster lost nodes: the survivors wait for a quorum that is not coming."""
        for brokers in (1, 3):
            alive = [running_pid(u) is not None for u in self._units(brokers)]
            if any(alive) and not all(alive):
                return 5.0
        return 30.0

    def running_layout(self) -> int:
        return 3 if any(running_pid(u) for u in self._units(3)) else 1

    def ports(self) -> list[int]:
        return [p + off for p in self._ports(self.brokers) for off in (0, 1)]

    def endpoints(self) -> str:
        return ",".join(f"{self.s.host}:{p}" for p in self._ports(self.brokers))

    def install(self) -> None:
        maven.copy_dependencies(self.s, f"kafka-{self.s.kafka_version}", [
            f"org.apache.kafka:kafka_2.13:{self.s.kafka_version}",
            # Kafka logs through slf4j 1.x; without a binding the broker would be silent.
            "org.apache.logging.log4j:log4j-slf4j-impl:2.25.5",
        ], self.home / "libs")

    @property
    def _log4j(self) -> Path:
        return self.home / "log4j2.properties"

    def prepare(self) -> None:
        write_log4j(self._log4j)
        layout = self._layout_dir(self.brokers)
        id_file = layout / "cluster.id"
        layout.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        ports = [(p, p + 1) for p in self._ports(self.brokers)]
        for node in range(1, len(ports) + 1):
            node_dir = layout / f"node-{node}"
            data = node_dir / "data"
            node_dir.mkdir(parents=True, exist_ok=True)
            props = node_dir / "server.properties"
            props.write_text(node_properties(node, self.s.host, ports, data))
            if (data / "meta.properties").exists():
                continue
            run_logged(format_argv(self.home, self._log4j, cluster_id, props),
                       self.s.log_dir / "install-kafka-format.log", f"formatting kafka node {node} storage")

    def health(self) -> Health:
        want = len(self._ports(self.brokers))
        try:
            brokers, controller = probes.kafka_cluster(self.s.host, self._ports(self.brokers)[0])
        except OSError as exc:
            return Health(False, f"metadata request failed: {exc}")
        if brokers < want or controller < 0:
            return Health(False, f"{brokers}/{want} brokers live, controller {controller}")
        return Health(True, f"{brokers} broker{'s' * (brokers > 1)}, controller {controller}")
