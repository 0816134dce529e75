"""Config: YAML + TG_* overrides, and refusals that name the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings.config import ConfigError, load


def test_defaults_are_the_embedded_gateway() -> None:
    cfg = load(env={})
    assert cfg.bus.kind == "memory"
    assert (cfg.server.grpc_port, cfg.server.http_port, cfg.admin.port) == (4317, 4318, 8888)
    assert cfg.ack == "durable"
    assert not cfg.auth.enabled


def test_yaml_file_then_env_override(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "bus:\n  kind: kafka\n  kafka:\n    bootstrap_servers: a:1\n"
        "auth:\n  enabled: true\n  api_keys:\n    k1: acme\n"
        "limits:\n  tenants:\n    acme: {items_per_second: 10, items_burst: 20}\n"
    )
    cfg = load(path, env={"TG_BUS__KAFKA__BOOTSTRAP_SERVERS": "b:2", "TG_SERVER__WORKERS": "2"})
    assert cfg.bus.kind == "kafka"
    assert cfg.bus.kafka.bootstrap_servers == "b:2"
    assert cfg.server.workers == 2
    assert cfg.auth.api_keys == {"k1": "acme"}
    assert cfg.limits.tenants["acme"].items_per_second == 10.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TG_SERVER__NOPE": "1"}, "unknown key"),
        ({"TG_SERVER__WORKERS": "many"}, "server.workers: expected an integer"),
        ({"TG_BUS__KIND": "rabbit"}, "bus.kind"),
        ({"TG_AUTH__ENABLED": "yes please"}, "auth.enabled"),
        ({"TG_AUTH__ENABLED": "true"}, "needs auth.api_keys"),
        ({"TG_SERVER__HTTP_PORT": "70000"}, "is not a port"),
        ({"TG_EMBEDDED_PIPELINE": "false"}, "bus.kind memory needs embedded_pipeline: true"),
        ({"TG_BATCH__MAX_PENDING_BYTES": "0"}, "batch.max_pending_bytes must be > 0"),
        ({"TG_BUS__KAFKA__REPLICATION_FACTOR": "0"}, "bus.kafka.partitions and bus.kafka.replication_factor"),
        ({"TG_BUS__KAFKA__MIN_INSYNC_REPLICAS": "2"}, r"min_insync_replicas: 2 .*replication_factor \(1\)"),
        ({"TG_BUS__KAFKA__MIN_INSYNC_REPLICAS": "-1"}, "bus.kafka.min_insync_replicas: -1"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)


def test_kafka_bus_runs_without_the_embedded_pipeline() -> None:
    cfg = load(env={"TG_BUS__KIND": "kafka", "TG_EMBEDDED_PIPELINE": "false"})
    assert cfg.bus.kind == "kafka" and not cfg.embedded_pipeline


def test_non_mapping_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(path, env={})


def test_replicated_topics_are_configurable() -> None:
    cfg = load(env={"TG_BUS__KAFKA__REPLICATION_FACTOR": "3", "TG_BUS__KAFKA__MIN_INSYNC_REPLICAS": "2"})
    assert (cfg.bus.kafka.replication_factor, cfg.bus.kafka.min_insync_replicas) == (3, 2)
    assert load(env={}).bus.kafka.min_insync_replicas == 0, "unset: the broker's default applies"


def test_a_bare_off_in_yaml_is_the_word_off(tmp_path: Path) -> None:
    """YAML 1.1 reads ``off`` as false; where "off" is one of a key's words, it means that word."""
    path = tmp_path / "gw.yaml"
    path.write_text("spool:\n  mode: off\n")
    assert load(path, env={}).spool.mode == "off"
    assert load(None, env={"TG_SPOOL__MODE": "off"}).spool.mode == "off"
    with pytest.raises(ConfigError, match=r"spool\.mode"):
        load(None, env={"TG_SPOOL__MODE": "true"})


def test_an_environment_override_fills_a_section_left_empty_in_the_file(tmp_path: Path) -> None:
    # "server:" with every key commented out is null in YAML: a TG_SERVER__* variable then
    # stopped the start with "server is not a section".
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  # grpc_port: 4317\nspool:\n")
    cfg = load(path, env={"TG_SERVER__TLS__RELOAD_INTERVAL": "5m", "TG_SERVER__GRPC_PORT": "14317"})
    assert cfg.server.tls.reload_interval_s == 300 and cfg.server.grpc_port == 14317
    path.write_text("server:\n  tls: 5\n")
    with pytest.raises(ConfigError, match="tls is not a section"):
        load(path, env={"TG_SERVER__TLS__RELOAD_INTERVAL": "5m"})
