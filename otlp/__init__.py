"""The OTLP core both sides share: signals and their one description each, the wire walk, the
content check and the OTLP/JSON mapping. Imports nothing from ``gateway`` or ``pipelines``."""
