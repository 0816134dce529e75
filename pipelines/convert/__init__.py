"""Pure conversions of decoded OTLP into what the stores take (no I/O, unit-tested, benchmarked)."""
