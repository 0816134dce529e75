"""Names shared by the edge, the bus and the pipelines, so the wire contract lives in one place."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    """An OTLP signal. The value is the OTLP/HTTP path suffix (``/v1/<value>``)."""

    TRACES = "traces"
    LOGS = "logs"
    METRICS = "metrics"

    @property
    def topic_suffix(self) -> str:
        """Kafka topic suffix: ``otlp_spans``/``otlp_logs``/``otlp_metrics`` per DESIGN.md."""
        return _TOPIC_SUFFIX[self]

    def topic(self, prefix: str = "otlp_") -> str:
        return prefix + self.topic_suffix

    @classmethod
    def from_topic(cls, topic: str, prefix: str = "otlp_") -> Signal:
        suffix = topic[len(prefix) :] if topic.startswith(prefix) else topic
        for sig, name in _TOPIC_SUFFIX.items():
            if name == suffix:
                return sig
        raise ValueError(f"topic {topic!r} is not an OTLP topic with prefix {prefix!r}")


_TOPIC_SUFFIX = {Signal.TRACES: "spans", Signal.LOGS: "logs", Signal.METRICS: "metrics"}

# Resource attributes the gateway owns; client-supplied values are replaced.
ATTR_TENANT = "tenant.id"
ATTR_CORRELATION = "correlation.id"

# Kafka message headers (DESIGN.md "Names on the wire").
HEADER_TENANT = "tenant"
HEADER_CORRELATION = "correlation-id"
HEADER_SIGNAL = "signal"

# Request/response header carrying the correlation id (HTTP header and gRPC metadata key).
CORRELATION_HEADER = "x-correlation-id"
TENANT_HEADER = "x-scope-orgid"

DEFAULT_TENANT = "default"
