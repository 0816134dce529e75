"""Sinks: where consumed OTLP batches are written.

``SINKS`` names every sink module (``pipelines.sinks.<name>`` with ``make_sink(cfg)``), what
``pipelines --sink`` accepts: a new sink is a module and a name here.
"""

SINKS = ("file", "elasticsearch", "jaeger", "prometheus", "otlp_grpc", "otlp_http")
