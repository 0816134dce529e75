"""Configuration: one YAML file, every key overridable by environment, validated at start.

Environment overrides use ``TG_`` plus the key path joined by ``__``, e.g.
``TG_BUS__KIND=kafka`` or ``TG_BUS__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``. Values are
parsed as YAML scalars, so ``TG_SERVER__WORKERS=2`` is an int and ``TG_AUTH__ENABLED=true`` a bool.
A wrong key or type stops the start with a message naming the key, instead of a traceback later.

Durations (fields typed :data:`Seconds`, named with an ``_s`` suffix) take either form: the
``_s`` key with a number of seconds (``reload_interval_s: 300``), or the OpenTelemetry
Collector's name for the same setting, without the suffix, with a Go duration string
(``reload_interval: 5m``, ``settings/durations.py``). Both forms for one setting in one source
are refused; an environment override of either form replaces the file's value in the other.
A bare number under the Collector's name is refused unless it is 0: the Collector's confmap would
read ``timeout: 30`` as 30 nanoseconds, a trap, so the unit has to be written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from settings.durations import ACCEPTED_FORM, DurationError, parse_duration_s

ENV_PREFIX = "TG_"
# ``TG_STACK_*`` variables describe the dev/test stack (stack/ports.env), not this process.
_NOT_CONFIG_PREFIX = "TG_STACK_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class _Duration:
    """Marks a field as a duration in seconds (see :data:`Seconds`)."""


# A duration in seconds, a field named ``<collector name>_s``: it also takes the Collector's name
# with a Go duration string (the module docstring).
Seconds = Annotated[float, _Duration()]


@dataclass
class TlsServerConfig:
    """TLS on a listening port, named as the Collector's ``configtls`` server settings.

    Off while ``cert_file`` is empty. With ``client_ca_file`` (mTLS) a client must present a
    certificate that CA signed, else its handshake is refused. A certificate, key or client CA
    replaced on disk reaches new connections after at most ``reload_interval_s`` (0: never re-read).

    ``client_ca_file_reload`` (the Collector's configtls key): the client CA is re-read with the
    certificate and key every ``reload_interval_s`` whatever it says; with ``reload_interval_s`` 0
    and ``client_ca_file_reload: true`` all three are re-read every ``CLIENT_CA_RELOAD_DEFAULT_S``
    (the Collector watches the CA file with fsnotify; this polls). ``false`` with an interval
    above 0 still re-reads the CA with the pair (one set, replaced together).
    """

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    client_ca_file_reload: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"
    reload_interval_s: Seconds = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    @property
    def reload_every_s(self) -> float:
        """Seconds between re-reads of the files, 0 for never: ``reload_interval_s``, or
        ``CLIENT_CA_RELOAD_DEFAULT_S`` when that is 0 and ``client_ca_file_reload`` is set."""
        if self.reload_interval_s > 0:
            return self.reload_interval_s
        return CLIENT_CA_RELOAD_DEFAULT_S if self.client_ca_file_reload and self.client_ca_file else 0.0


# How often ``client_ca_file_reload: true`` re-reads the TLS files when ``reload_interval_s`` is 0 (s).
CLIENT_CA_RELOAD_DEFAULT_S = 60.0


@dataclass
class GrpcKeepaliveServerParameters:
    """grpc server keepalive (the Collector's ``keepalive.server_parameters``), in seconds.

    ``max_connection_age_s`` (+/- 10% jitter, then ``max_connection_age_grace_s`` for calls in
    flight) ends every connection after that long with a GOAWAY; the client reconnects, and
    behind an L4 balancer or SO_REUSEPORT may land on another replica, so long-lived clients
    spread over new replicas. 0 turns a setting off (``time_s``/``timeout_s``: grpc's default).
    """

    max_connection_idle_s: Seconds = 0.0
    max_connection_age_s: Seconds = 120.0
    max_connection_age_grace_s: Seconds = 30.0
    time_s: Seconds = 60.0  # ping a connection idle this long ...
    timeout_s: Seconds = 20.0  # ... and close it if the ping is not answered within this


@dataclass
class GrpcKeepaliveEnforcementPolicy:
    """What clients' keepalive pings may do (the Collector's ``keepalive.enforcement_policy``)."""

    # Pings closer than this are strikes (too many: GOAWAY); 0 is grpc-go's default, 300 s, as in
    # the Collector (grpc core's 0 would allow any rate).
    min_time_s: Seconds = 10.0
    permit_without_stream: bool = True  # pings on a connection with no call open are allowed


@dataclass
class GrpcKeepalive:
    server_parameters: GrpcKeepaliveServerParameters = field(default_factory=GrpcKeepaliveServerParameters)
    enforcement_policy: GrpcKeepaliveEnforcementPolicy = field(default_factory=GrpcKeepaliveEnforcementPolicy)


@dataclass
class GrpcServerConfig:
    keepalive: GrpcKeepalive = field(default_factory=GrpcKeepalive)


@dataclass
class HttpServerConfig:
    """OTLP/HTTP keep-alive connections: once a connection is ``max_connection_age_s`` old or has
    carried ``max_requests_per_connection`` requests, the next answer carries ``Connection: close``
    and the client reconnects (possibly to another replica). 0 turns either off."""

    max_connection_age_s: Seconds = 120.0
    max_requests_per_connection: int = 0


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    grpc_port: int = 4317
    http_port: int = 4318
    workers: int = 1
    max_request_bytes: int = 8 * 1024 * 1024  # as received (compressed)
    # A body / message once decompressed, whatever its encoding; a bomb stops here.
    max_decompressed_bytes: int = 32 * 1024 * 1024
    max_concurrent_requests: int = 1024
    # Items (spans, log records, metric data points) in one Export request, good or bad; more is
    # refused whole with 413 / RESOURCE_EXHAUSTED without retry info. An SDK batch is 512.
    max_items_per_request: int = 100_000
    # OTLP/HTTP request bodies held at once over all connections of a worker (being received or
    # handled); past it a new body is refused with 503 + Retry-After, so many slow senders of
    # large bodies cannot grow memory without bound.
    max_buffered_request_bytes: int = 128 * 1024 * 1024
    # Inflated bytes per compressed byte (any Content-Encoding, both transports) beyond which a
    # request is refused with 413 / RESOURCE_EXHAUSTED; applied only past 1 MiB inflated. OTLP
    # protobuf compresses 5-20x, JSON up to ~50x; a gzip or zstd bomb 1000x and more. 0 turns it off.
    max_decompression_ratio: float = 200.0
    # OTLP/HTTP connection deadlines, in seconds (the Collector's confighttp names, with this
    # file's unit suffix): the request head must arrive within read_header_timeout_s of its first
    # byte, the whole request within read_timeout_s; a connection with no request open is closed
    # after idle_timeout_s. A late request is answered 408 and its connection closed.
    read_header_timeout_s: Seconds = 10.0
    read_timeout_s: Seconds = 60.0
    idle_timeout_s: Seconds = 60.0
    # TLS (and mTLS) on both OTLP ports.
    tls: TlsServerConfig = field(default_factory=TlsServerConfig)
    # Connection lifetimes, so long-lived clients rebalance over replicas.
    grpc: GrpcServerConfig = field(default_factory=GrpcServerConfig)
    http: HttpServerConfig = field(default_factory=HttpServerConfig)


@dataclass
class AdminConfig:
    host: str = "0.0.0.0"
    port: int = 8888
    tls: TlsServerConfig = field(default_factory=TlsServerConfig)


@dataclass
class AuthConfig:
    enabled: bool = False
    # API key -> tenant id.
    api_keys: dict[str, str] = field(default_factory=dict)
    # Take the tenant from X-Scope-OrgID (only behind a proxy that sets it). With `enabled` too,
    # a request still needs a valid key, and the header only picks among the tenants that key
    # may act for: its own and those in `delegated_tenants`.
    trust_tenant_header: bool = False
    # Tenant of a key -> the other tenants its key may name in X-Scope-OrgID ("*": any), e.g. a
    # shared agent that forwards for several teams.
    delegated_tenants: dict[str, list[str]] = field(default_factory=dict)
    # mTLS: a name of the client certificate (its subject CN, or any of its DNS, IP, e-mail or
    # URI SANs) -> tenant id. A mapped certificate decides the tenant, whatever X-Scope-OrgID or
    # the API key say; an unmapped one leaves the decision to the rules above. Needs
    # server.tls.client_ca_file: only certificates that CA signed are read.
    client_cert_tenants: dict[str, str] = field(default_factory=dict)


@dataclass
class RateLimit:
    """Token buckets per tenant; 0 means unlimited."""

    items_per_second: float = 0.0
    items_burst: float = 0.0
    bytes_per_second: float = 0.0
    bytes_burst: float = 0.0


@dataclass
class LimitsConfig:
    default: RateLimit = field(default_factory=RateLimit)
    tenants: dict[str, RateLimit] = field(default_factory=dict)


@dataclass
class BatchConfig:
    # Caps, not timers every request waits for (gateway/batcher.py: group commit): a (signal, tenant)
    # with no publish in flight is flushed at once; what gathers behind one in flight is flushed when
    # it completes, or when it reaches max_bytes, or after max_age_ms behind a slow publish.
    max_bytes: int = 1024 * 1024
    max_age_ms: float = 20.0
    # Data held by the batcher (open, waiting to publish, publishing) beyond which requests are
    # refused as overloaded (503): with ``ack: accepted`` nothing else bounds it while the bus stalls.
    max_pending_bytes: int = 64 * 1024 * 1024
    # Publishes of one (signal, tenant) in flight before arrivals gather for the next batch (no
    # same-meaning Collector setting: exporterhelper's num_consumers bounds all keys together).
    # 1 and 2 measured alike within the noise (docs/architecture.md, "Latency budget"): aiokafka
    # sends one produce request per broker at a time, so a second batch mostly waits in the
    # producer; 1 gathers larger batches and keeps a key's batches in flush order (more may reorder
    # them within a partition: see gateway/batcher.py).
    max_inflight_per_key: int = 1


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "otlp_"
    # zstd (level 3): best ratio and least CPU on OTLP batches of the codecs aiokafka offers;
    # its lz4 runs at level 9 (HC), several times slower for a worse ratio.
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "zstd"
    # spread: each tenant over every partition of a topic, keeping together what must stay whole
    # (spans by trace id, metrics by the resource's job/instance, logs round robin per batch), so
    # one tenant's load is shared by every pipeline worker. tenant: all of a tenant's data on one
    # partition (keyed by tenant). trace_id: the former name of spread, kept for old configs.
    partition_by: Literal["spread", "tenant", "trace_id"] = "spread"
    max_message_bytes: int = 1_000_000
    # 0, aiokafka's own default (the Java client's until Kafka 4.0, KIP-1030): the batcher already
    # gathers what arrives while a publish is in flight, so a linger only delays every answer.
    # Measured (docs/architecture.md, "Latency budget"): p50 ~12-23 ms with 5, ~5-9 ms with 0.
    linger_ms: int = 0
    request_timeout_ms: int = 30_000
    client_id: str = "telemetry-gateway"
    # Topics the gateway and the pipelines create (when ``create_topics``); a topic that exists keeps
    # its own settings. Replicas of each partition, and how many must hold a message before Kafka
    # acknowledges it (acks=all): 3 and 2 keep acknowledged data and keep taking writes with one
    # broker down. 0 leaves min.insync.replicas to the broker's default (Kafka's own is 1).
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 0
    create_topics: bool = True
    # A publish Kafka has not acknowledged within this time is refused as retryable (503).
    publish_timeout_ms: int = 5_000
    # How long start() waits for a first connection before the gateway starts unready.
    start_wait_ms: int = 3_000
    reconnect_backoff_max_ms: int = 5_000
    # A metadata round trip this often while idle, so /readyz notices a lost broker without traffic.
    health_check_interval_ms: int = 5_000
    # Retry hint to clients refused while Kafka is unavailable. SDK exporters retry ~6 times
    # honouring it, so 5 s lets them ride out a ~30 s outage (a broker restart) without loss.
    unavailable_retry_after_ms: int = 5_000
    # Security, for every client of the brokers (the gateway's producer, the pipelines' consumers
    # and dead-letter producers, topic admin), in the Kafka client's own terms.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    # The password is never in this file: it is read from a file (a mounted Secret) or from the
    # environment variable named here (not a TG_ one). Logs and /readyz name these settings, never it.
    sasl_password_file: str = ""
    sasl_password_env: str = ""
    # TLS (SSL, SASL_SSL): the CA that signed the brokers' certificates (empty: the system's), and
    # a client certificate and key for brokers that require one.
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""


@dataclass
class SpoolConfig:
    """A write-ahead log on local disk in front of the bus (``bus/spool``)."""

    # off: no spool (a bus outage is a retryable 503). on_failure: publish straight to the bus
    # while it takes data; spool a batch whose publish fails, and every batch while a backlog
    # exists (so order within a (signal, tenant) holds). always: every batch goes through the log.
    mode: Literal["off", "on_failure", "always"] = "off"
    # Each worker process owns one worker-<n> directory below it (flock'ed); directories of
    # workers that are gone are adopted and replayed.
    dir: str = "./spool"
    # Unacknowledged bytes beyond which batches are refused (503 / UNAVAILABLE + retry hint).
    max_bytes: int = 1024 * 1024 * 1024
    # Free disk space on the spool's filesystem below which the spool counts as full.
    min_free_bytes: int = 256 * 1024 * 1024
    # The oldest unacknowledged record older than this makes the spool count as full; 0: no limit.
    max_age_s: Seconds = 0.0
    # fsync each group commit: an OK then survives power loss, not only a process crash.
    fsync: bool = True
    segment_bytes: int = 16 * 1024 * 1024
    # Replay of records older than 1 s (a backlog) is paced to this; 0: unpaced.
    replay_max_bytes_per_s: int = 64 * 1024 * 1024
    # Batches handed to the bus below at once while draining (one at a time per (signal, tenant)).
    replay_concurrency: int = 16
    # Retry hint sent to clients while the spool is full.
    full_retry_after_ms: int = 5_000
    # On SIGTERM, wait up to this for the backlog to reach a reachable bus before stopping (what is
    # left stays on disk and is replayed by the next start).
    stop_drain_ms: int = 5_000


@dataclass
class BusConfig:
    kind: Literal["memory", "kafka"] = "memory"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)


@dataclass
class FileSinkConfig:
    data_dir: str = "./data"
    # As the Collector's file exporter: json (OTLP/JSON lines, <signal>.jsonl) or proto (each
    # Export request's protobuf bytes after a 4-byte big-endian length, <signal>.binpb).
    format: Literal["json", "proto"] = "json"


@dataclass
class TlsClientConfig:
    """TLS to a backend, named as the Collector's ``configtls`` client settings. HTTP backends use
    TLS for ``https://`` URLs; a gRPC backend when its endpoint is ``https://host:port`` or any
    file here is set."""

    ca_file: str = ""  # the CA that signed the backend's certificate; empty: the system's CAs
    cert_file: str = ""  # client certificate (mTLS), with key_file
    key_file: str = ""


@dataclass
class BackendCredentials:
    """What a sink presents to its store: TLS settings and basic auth. Secrets (here and in the
    subclasses) come from a file or an environment variable, never from this file."""

    tls: TlsClientConfig = field(default_factory=TlsClientConfig)
    username: str = ""
    password_file: str = ""
    password_env: str = ""


@dataclass
class ElasticsearchSinkConfig(BackendCredentials):
    hosts: str = "http://127.0.0.1:9200"
    bulk_max_bytes: int = 5 * 1024 * 1024
    bulk_max_docs: int = 5000
    concurrency: int = 2
    # Or pin the node's certificate by its SHA-256 fingerprint (hex, colons optional).
    ca_fingerprint: str = ""
    # Instead of basic auth: an API key (the base64 "id:key" the create-API-key call returns as
    # "encoded").
    api_key_file: str = ""
    api_key_env: str = ""


@dataclass
class JaegerSinkConfig:
    """``--sink jaeger``: the OTLP/gRPC forwarding sink, traces only, to Jaeger's receiver."""

    endpoint: str = "127.0.0.1:14317"
    tls: TlsClientConfig = field(default_factory=TlsClientConfig)
    headers: dict[str, str] = field(default_factory=dict)
    headers_from_file: dict[str, str] = field(default_factory=dict)
    headers_from_env: dict[str, str] = field(default_factory=dict)


@dataclass
class OtlpForwardConfig:
    """What both OTLP forwarding sinks take."""

    # Comma-separated: which signals this worker consumes and forwards.
    signals: str = "traces,logs,metrics"
    headers: dict[str, str] = field(default_factory=dict)
    # Headers whose value is a secret (an API key, an authorization): header -> a file holding the
    # value, or header -> the name of an environment variable holding it.
    headers_from_file: dict[str, str] = field(default_factory=dict)
    headers_from_env: dict[str, str] = field(default_factory=dict)
    tls: TlsClientConfig = field(default_factory=TlsClientConfig)
    # Sent with the record's tenant as value (X-Scope-OrgID for Tempo/Mimir-style stores); empty: none.
    tenant_header: str = ""
    timeout_s: Seconds = 10.0
    concurrency: int = 4
    max_request_bytes: int = 3 * 1024 * 1024


@dataclass
class OtlpGrpcSinkConfig(OtlpForwardConfig):
    """``--sink otlp_grpc``: forward the OTLP bytes to any OTLP/gRPC receiver (``host:port``)."""

    endpoint: str = "127.0.0.1:4317"
    compression: Literal["none", "gzip"] = "none"


@dataclass
class OtlpHttpSinkConfig(OtlpForwardConfig):
    """``--sink otlp_http``: forward as OTLP/HTTP protobuf to ``endpoint`` + ``/v1/<signal>``,
    or to a signal's own URL in ``urls`` (``{"logs": "http://host/insert/opentelemetry/v1/logs"}``)."""

    endpoint: str = "http://127.0.0.1:4318"
    urls: dict[str, str] = field(default_factory=dict)
    compression: Literal["none", "gzip"] = "gzip"
    # Decode each record before sending it (only parts that decode are sent): a store may keep
    # the part of a request it read before refusing it, as VictoriaLogs does.
    validate: bool = True


@dataclass
class PrometheusSinkConfig(BackendCredentials):
    url: str = "http://127.0.0.1:9090/api/v1/write"
    timeout_s: Seconds = 10.0
    # Instead of basic auth: a bearer token; and extra headers (plain, or secret ones from files
    # / variables).
    bearer_token_file: str = ""
    bearer_token_env: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    headers_from_file: dict[str, str] = field(default_factory=dict)
    headers_from_env: dict[str, str] = field(default_factory=dict)


@dataclass
class PipelinesConfig:
    group_prefix: str = "telemetry-gateway-"
    dead_letter_topic: str = "otlp_dead_letter"
    max_inflight_records: int = 500
    # Retries of a sink write failing with an error the sink did not classify, before its records
    # are written one at a time and a record still failing goes to the dead letters.
    max_unexpected_retries: int = 3
    # Prometheus /metrics of a pipelines worker (consumer lag, acked and dead-lettered records).
    admin_host: str = "0.0.0.0"
    admin_port: int = 8889
    file: FileSinkConfig = field(default_factory=FileSinkConfig)
    elasticsearch: ElasticsearchSinkConfig = field(default_factory=ElasticsearchSinkConfig)
    jaeger: JaegerSinkConfig = field(default_factory=JaegerSinkConfig)
    otlp_grpc: OtlpGrpcSinkConfig = field(default_factory=OtlpGrpcSinkConfig)
    otlp_http: OtlpHttpSinkConfig = field(default_factory=OtlpHttpSinkConfig)
    prometheus: PrometheusSinkConfig = field(default_factory=PrometheusSinkConfig)


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    # durable: answer after the bus holds the data; accepted: answer on enqueue.
    ack: Literal["durable", "accepted"] = "durable"
    bus: BusConfig = field(default_factory=BusConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    pipelines: PipelinesConfig = field(default_factory=PipelinesConfig)
    # In embedded mode (memory bus) the gateway process also runs the file sink pipeline.
    embedded_pipeline: bool = True
    log_level: str = "INFO"

    @property
    def runs_embedded_pipeline(self) -> bool:
        """Whether each gateway worker runs the embedded default: memory bus -> file sink."""
        return self.bus.kind == "memory" and self.embedded_pipeline


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read YAML (if given), apply ``TG_*`` environment overrides, validate, return Config."""
    raw: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) if text.strip() else {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        raw = loaded
    from_env: set[tuple[str, ...]] = set()
    for key, value in (os.environ if env is None else env).items():
        if key.startswith(_NOT_CONFIG_PREFIX):
            continue
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            parts = key[len(ENV_PREFIX) :].lower().split("__")
            _set_path(raw, parts, yaml.safe_load(value), key)
            from_env.add(tuple(parts))
    _drop_durations_overridden(raw, from_env)
    cfg: Config = _build(Config, raw, "")
    _check(cfg)
    return cfg


def _set_path(raw: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or a section left empty in the file (``server:``)
            node[part] = {}
        nxt = node[part]
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: {part} is not a section")
        node = nxt
    node[parts[-1]] = value


def _drop_durations_overridden(raw: dict[str, Any], from_env: set[tuple[str, ...]]) -> None:
    """The environment wins over the file, also across a duration's two forms: a variable
    setting ``timeout`` removes the file's ``timeout_s`` (and the reverse), unless the environment
    sets both (then :func:`_build` refuses the pair)."""
    for parts in from_env:
        seconds_name = _duration_field(parts)
        if seconds_name is None:
            continue
        other = seconds_name[:-2] if parts[-1] == seconds_name else seconds_name
        if (*parts[:-1], other) in from_env:
            continue
        node: Any = raw
        for part in parts[:-1]:
            node = node[part]
        node.pop(other, None)


def _duration_field(parts: tuple[str, ...]) -> str | None:
    """The ``_s`` field a key path names in either form, if it is a :data:`Seconds` field."""
    tp: Any = Config
    for i, part in enumerate(parts):
        if typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]  # this part is a key of the mapping
            continue
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp, include_extras=True)
        if i == len(parts) - 1:
            for name in (part, f"{part}_s"):
                if name.endswith("_s") and _is_duration(hints.get(name)):
                    return name
            return None
        if part not in hints:
            return None
        tp = hints[part]  # a section: a dataclass or a dict of them, never Annotated
    return None


def _is_duration(hint: Any) -> bool:
    return typing.get_origin(hint) is Annotated and any(isinstance(m, _Duration) for m in hint.__metadata__)


def _collector_durations(cls: type[Any], raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with each duration given under the Collector's name (a Go duration string) moved to
    its ``_s`` field in seconds. Raises ConfigError naming the key for both forms given at once,
    a bare number other than 0, a malformed string, a string under the ``_s`` name, or a number
    of seconds that is negative, NaN or infinite."""
    out = dict(raw)
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if not _is_duration(hint):
            continue
        alias, at = name[:-2], f"{where}.{name[:-2]}" if where else name[:-2]
        seconds_at = f"{at}_s"
        if name in out and isinstance(out[name], str):
            raise ConfigError(f"{seconds_at}: expected a number of seconds, got {out[name]!r}; "
                              f"{_seconds_string_hint(out[name], name, alias)}")
        if alias in out:
            if name in out:
                raise ConfigError(f"{at} and {seconds_at} are one setting given twice; keep one ({alias}: "
                                  f"a duration such as 30s, or {name}: a number of seconds)")
            out[name] = _duration_seconds(out.pop(alias), at, name)
        value = out.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
                math.isfinite(value) and value >= 0):
            # YAML's .nan passes every "< 0" check after this and .inf overflows grpc's int
            # milliseconds at start; a negative timeout means nothing (the Go form refuses it too).
            raise ConfigError(f"{seconds_at}: {value!r} is not a duration; expected a number of seconds, "
                              f"0 or more (or {alias}: {ACCEPTED_FORM})")
    return out


def _seconds_string_hint(text: str, seconds_name: str, alias: str) -> str:
    """What to write instead of the string ``text`` under ``seconds_name``: the Collector's name
    when ``text`` is a duration there, the number unquoted when it is one (``"300"``), else both
    accepted forms. Only a hint that would load is given."""
    try:
        parse_duration_s(text)
        return f"for {ACCEPTED_FORM} use {alias}: {text}"
    except DurationError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number >= 0:
        return f"write the number without quotes ({seconds_name}: {text.strip()})"
    return f"or use {alias}: {ACCEPTED_FORM}"


def _duration_seconds(value: Any, where: str, seconds_name: str) -> float:
    if isinstance(value, str):
        try:
            return parse_duration_s(value)
        except DurationError as e:
            raise ConfigError(f"{where}: {value!r} {e}; expected {ACCEPTED_FORM}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == 0:
            return 0.0
        raise ConfigError(f"{where}: {value!r} has no unit; write it with one ({value}s, {value}ms, ...) or "
                          f"as {seconds_name}: {value} for seconds (the Collector would read a bare "
                          f"{value} as nanoseconds)")
    raise ConfigError(f"{where}: expected {ACCEPTED_FORM}, got {value!r}")


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    raw = _collector_durations(cls, raw, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, where)  # type: ignore[arg-type]
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in typing.get_args(tp):
            value = "on" if value else "off"  # YAML 1.1 reads a bare off / on as false / true
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
                str(value) in typing.get_args(tp)):
            # YAML reads a bare 1.3 (min_version: 1.3, TG_SERVER__TLS__MIN_VERSION=1.3) as a float
            value = str(value)
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (et,) = typing.get_args(tp)
        return [_coerce(et, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(f"{where}: unsupported type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def _check(cfg: Config) -> None:
    s = cfg.server
    for name, port in (("server.grpc_port", s.grpc_port), ("server.http_port", s.http_port),
                       ("admin.port", cfg.admin.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name}: {port} is not a port")
    if s.workers < 1:
        raise ConfigError("server.workers: must be at least 1")
    if s.max_request_bytes <= 0 or s.max_decompressed_bytes < s.max_request_bytes:
        raise ConfigError("server.max_decompressed_bytes must be >= server.max_request_bytes > 0")
    if s.max_decompression_ratio < 0:
        raise ConfigError("server.max_decompression_ratio: must be >= 0 (0: no ratio limit)")
    for name in ("read_header_timeout_s", "read_timeout_s", "idle_timeout_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"server.{name} (or {name[:-2]}): must be more than 0 seconds")
    if cfg.batch.max_bytes <= 0 or cfg.batch.max_age_ms < 0:
        raise ConfigError("batch.max_bytes must be > 0 and batch.max_age_ms >= 0")
    if cfg.batch.max_pending_bytes <= 0:
        raise ConfigError("batch.max_pending_bytes must be > 0")
    if cfg.batch.max_inflight_per_key < 1:
        raise ConfigError("batch.max_inflight_per_key: must be at least 1")
    k = cfg.bus.kafka
    if k.partitions < 1 or k.replication_factor < 1:
        raise ConfigError("bus.kafka.partitions and bus.kafka.replication_factor must be at least 1")
    if not 0 <= k.min_insync_replicas <= k.replication_factor:
        raise ConfigError(f"bus.kafka.min_insync_replicas: {k.min_insync_replicas} must be between 0 (the "
                          f"broker's default) and bus.kafka.replication_factor ({k.replication_factor}): "
                          "with more, Kafka refuses every write")
    _check_kafka_security(k)
    sp = cfg.spool
    if sp.max_bytes <= 0 or sp.segment_bytes <= 0 or sp.min_free_bytes < 0 or sp.max_age_s < 0:
        raise ConfigError("spool.max_bytes and spool.segment_bytes must be > 0, spool.min_free_bytes and "
                          "spool.max_age_s >= 0")
    if sp.replay_concurrency < 1 or sp.replay_max_bytes_per_s < 0:
        raise ConfigError("spool.replay_concurrency must be >= 1 and spool.replay_max_bytes_per_s >= 0")
    if sp.mode != "off" and not sp.dir:
        raise ConfigError("spool.dir: needed when spool.mode is not off")
    if cfg.pipelines.max_unexpected_retries < 0:
        raise ConfigError("pipelines.max_unexpected_retries: must be >= 0")
    if cfg.bus.kind == "memory" and not cfg.embedded_pipeline:
        raise ConfigError("bus.kind memory needs embedded_pipeline: true: nothing else reads the in-process "
                          "log, so it would fill and every request would be refused; use bus.kind kafka "
                          "to run the pipelines separately")
    if cfg.auth.enabled and not (cfg.auth.api_keys or cfg.auth.trust_tenant_header
                                 or cfg.auth.client_cert_tenants):
        raise ConfigError("auth.enabled: needs auth.api_keys, auth.trust_tenant_header or "
                          "auth.client_cert_tenants")
    _check_tls(cfg)
    _check_connections(cfg.server)


def _check_kafka_security(k: KafkaConfig) -> None:
    if k.security_protocol.startswith("SASL"):
        if not k.sasl_username:
            raise ConfigError(f"bus.kafka.sasl_username: needed with security_protocol {k.security_protocol}")
        if bool(k.sasl_password_file) == bool(k.sasl_password_env):
            raise ConfigError("bus.kafka: set one of sasl_password_file (a file holding the password) or "
                              "sasl_password_env (the name of an environment variable holding it)")
    if k.sasl_password_env.startswith(ENV_PREFIX):
        raise ConfigError(f"bus.kafka.sasl_password_env: {k.sasl_password_env} starts with {ENV_PREFIX}, "
                          "which is read as configuration; name another variable")
    if bool(k.ssl_cert_file) != bool(k.ssl_key_file):
        raise ConfigError("bus.kafka: ssl_cert_file and ssl_key_file go together")
    if (k.ssl_ca_file or k.ssl_cert_file) and k.security_protocol not in ("SSL", "SASL_SSL"):
        raise ConfigError(f"bus.kafka.ssl_*: need security_protocol SSL or SASL_SSL, not "
                          f"{k.security_protocol}")


def _check_connections(s: ServerConfig) -> None:
    sp, ep = s.grpc.keepalive.server_parameters, s.grpc.keepalive.enforcement_policy
    for name in ("max_connection_idle_s", "max_connection_age_s", "max_connection_age_grace_s", "time_s",
                 "timeout_s"):
        if getattr(sp, name) < 0:
            raise ConfigError(f"server.grpc.keepalive.server_parameters.{name}: must be >= 0 (0: off)")
    if ep.min_time_s < 0:
        raise ConfigError("server.grpc.keepalive.enforcement_policy.min_time_s: must be >= 0")
    if s.http.max_connection_age_s < 0 or s.http.max_requests_per_connection < 0:
        raise ConfigError("server.http.max_connection_age_s and max_requests_per_connection: must be >= 0 "
                          "(0: off)")


def _check_tls(cfg: Config) -> None:
    for where, tls in (("server.tls", cfg.server.tls), ("admin.tls", cfg.admin.tls)):
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError(f"{where}: cert_file and key_file go together")
        if tls.client_ca_file and not tls.cert_file:
            raise ConfigError(f"{where}.client_ca_file: needs {where}.cert_file and key_file (mTLS is TLS)")
        if tls.reload_interval_s < 0:
            raise ConfigError(f"{where}.reload_interval_s: must be >= 0 (0: never re-read)")
    if cfg.auth.client_cert_tenants and not cfg.server.tls.client_ca_file:
        raise ConfigError("auth.client_cert_tenants: needs server.tls.client_ca_file, so that only "
                          "certificates signed by that CA name a tenant")
