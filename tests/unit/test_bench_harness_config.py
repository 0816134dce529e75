"""The Collector peer's config is rewritten per round: its ports, brokers and topics, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.systems import BENCH_COLLECTOR_CONFIG, collector_config

DURABLE = BENCH_COLLECTOR_CONFIG.with_name("collector-otlp-kafka-durable.yaml")


@pytest.mark.parametrize("path", [BENCH_COLLECTOR_CONFIG, DURABLE], ids=["batch", "durable"])
def test_shipped_configs_get_the_rounds_endpoints_and_topics(path: Path) -> None:
    base = yaml.safe_load(path.read_text())
    cfg = collector_config(base, grpc_port=1111, http_port=2222, bootstrap="127.0.0.1:9092,127.0.0.1:9094",
                           topic_prefix="bench.x.r01.col.")
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:1111"
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "127.0.0.1:2222"
    kafka = cfg["exporters"]["kafka"]
    assert kafka["brokers"] == ["127.0.0.1:9092", "127.0.0.1:9094"]
    assert kafka["traces"] == {"topic": "bench.x.r01.col.spans", "encoding": "otlp_proto"}
    assert kafka["logs"]["topic"] == "bench.x.r01.col.logs"
    assert kafka["metrics"]["topic"] == "bench.x.r01.col.metrics"
    assert kafka["producer"]["required_acks"] == -1  # durable on the broker side, like the gateway
    assert cfg["service"]["telemetry"]["metrics"] == {"level": "none"}
    assert base["exporters"]["kafka"]["traces"]["topic"] == "otlp_spans"  # the base is not modified


def test_named_components_and_an_old_style_topic_are_rewritten_too() -> None:
    base = {"receivers": {"otlp/in": {"protocols": {"grpc": {}}}},
            "exporters": {"kafka/out": {"brokers": ["kafka:9092"], "topic": "otlp_spans",
                                        "encoding": "otlp_proto"}},
            "service": {"pipelines": {}}}
    cfg = collector_config(base, grpc_port=1, http_port=2, bootstrap="127.0.0.1:9092", topic_prefix="p.")
    out = cfg["exporters"]["kafka/out"]
    assert "topic" not in out
    assert out["traces"]["topic"] == "p.spans"
    assert cfg["receivers"]["otlp/in"]["protocols"]["http"]["endpoint"] == "127.0.0.1:2"


def test_the_durable_variant_answers_only_after_export() -> None:
    cfg = yaml.safe_load(DURABLE.read_text())
    queue = cfg["exporters"]["kafka"]["sending_queue"]
    assert queue["wait_for_result"] is True
    assert all("batch" not in p.get("processors", []) for p in cfg["service"]["pipelines"].values())
