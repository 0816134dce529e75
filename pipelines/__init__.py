"""Kafka consumers and the sinks they feed; OTLP conversions live here, never on the ingest path."""
