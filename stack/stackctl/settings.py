"""The stack's configuration, read once from the environment that ``stack/ports.env`` fills in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"stack: {name} is not set; run through stack/up, stack/down or stack/status")
    return value


def _port(name: str) -> int:
    return int(_env(name))


@dataclass(frozen=True)
class Settings:
    cache: Path
    host: str
    start_timeout: float
    kafka_version: str
    kafka_port: int
    kafka_cluster_ports: tuple[int, ...]
    kafka_heap: tuple[str, str]
    es_version: str
    es_port: int
    es_transport_port: int
    es_heap: str
    es_user: str
    jaeger_version: str
    jaeger_otlp_grpc_port: int
    jaeger_otlp_http_port: int
    jaeger_query_port: int
    jaeger_query_grpc_port: int
    jaeger_health_port: int
    jaeger_metrics_port: int
    jaeger_bin: Path
    telemetrygen_version: str
    telemetrygen_bin: Path
    prometheus_port: int
    prometheus_bin: Path
    otel_java_version: str
    victorialogs_version: str
    victorialogs_port: int
    victorialogs_bin: Path

    @property
    def bin_dir(self) -> Path:
        return self.cache / "bin"

    @property
    def run_dir(self) -> Path:
        return self.cache / "run"

    @property
    def log_dir(self) -> Path:
        return self.cache / "logs"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            cache=Path(_env("TG_STACK_CACHE")),
            host=_env("TG_STACK_HOST"),
            start_timeout=float(_env("TG_STACK_START_TIMEOUT")),
            kafka_version=_env("TG_STACK_KAFKA_VERSION"),
            kafka_port=_port("TG_STACK_KAFKA_PORT"),
            kafka_cluster_ports=tuple(int(p) for p in _env("TG_STACK_KAFKA_CLUSTER_PORTS").split(",")),
            kafka_heap=(_env("TG_STACK_KAFKA_HEAP_MIN"), _env("TG_STACK_KAFKA_HEAP_MAX")),
            es_version=_env("TG_STACK_ES_VERSION"),
            es_port=_port("TG_STACK_ES_PORT"),
            es_transport_port=_port("TG_STACK_ES_TRANSPORT_PORT"),
            es_heap=_env("TG_STACK_ES_HEAP"),
            es_user=_env("TG_STACK_ES_USER"),
            jaeger_version=_env("TG_STACK_JAEGER_VERSION"),
            jaeger_otlp_grpc_port=_port("TG_STACK_JAEGER_OTLP_GRPC_PORT"),
            jaeger_otlp_http_port=_port("TG_STACK_JAEGER_OTLP_HTTP_PORT"),
            jaeger_query_port=_port("TG_STACK_JAEGER_QUERY_PORT"),
            jaeger_query_grpc_port=_port("TG_STACK_JAEGER_QUERY_GRPC_PORT"),
            jaeger_health_port=_port("TG_STACK_JAEGER_HEALTH_PORT"),
            jaeger_metrics_port=_port("TG_STACK_JAEGER_METRICS_PORT"),
            jaeger_bin=Path(_env("TG_STACK_JAEGER_BIN")),
            telemetrygen_version=_env("TG_STACK_TELEMETRYGEN_VERSION"),
            telemetrygen_bin=Path(_env("TG_STACK_TELEMETRYGEN_BIN")),
            prometheus_port=_port("TG_STACK_PROMETHEUS_PORT"),
            prometheus_bin=Path(_env("TG_STACK_PROMETHEUS_BIN")),
            otel_java_version=_env("TG_STACK_OTEL_JAVA_VERSION"),
            victorialogs_version=_env("TG_STACK_VICTORIALOGS_VERSION"),
            victorialogs_port=_port("TG_STACK_VICTORIALOGS_PORT"),
            victorialogs_bin=Path(_env("TG_STACK_VICTORIALOGS_BIN")),
        )
