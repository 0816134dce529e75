"""OTLP receivers: the gRPC and HTTP edges. They decode envelopes only, never spans."""
