"""Sinks: where consumed OTLP batches are written (file, Elasticsearch, Jaeger, Prometheus)."""
