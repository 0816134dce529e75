"""telemetry-gateway: the OTLP ingest edge (receivers, tenancy, enrichment, batching)."""

__version__ = "0.1.0"
