"""The pipelines' self-metrics (Prometheus), defined once, served on ``pipelines.admin_port``.

The consumer's own (lag, commit errors) are the bus's: ``bus/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Counter

# pipeline
ACKED_RECORDS = Counter(
    "pipeline_sink_acked_records_total", "Records the sink acknowledged (then committed).", ["sink"]
)
DEAD_LETTER_RECORDS = Counter(
    "pipeline_dead_letter_records_total", "Records the sink rejected for good (sent to dead letters).",
    ["sink"],
)
SINK_ERRORS = Counter(
    "pipeline_sink_errors_total",
    "Sink write failures by kind (transient: retried; permanent: dead-lettered; unexpected: "
    "retried a few times, then per record; gave_up: a record dead-lettered after unexpected errors).",
    ["sink", "kind"],
)
ISOLATED_BATCHES = Counter(
    "pipeline_isolated_batches_total",
    "Batches written one record at a time after repeated unexpected sink errors.", ["sink"],
)

# credentials (pipelines/sinks/answers.py: credentials_refused)
SINK_AUTH_FAILURES = Counter(
    "pipeline_sink_auth_failures_total",
    "Requests a store refused for our credentials, by sink and answer (HTTP 401 / 403, gRPC "
    "UNAUTHENTICATED / PERMISSION_DENIED). Retried like any transient error: the data waits in Kafka "
    "until the credential is fixed.",
    ["sink", "code"],
)

# file
FILE_REJECTED_PARTS = Counter(
    "pipeline_file_sink_rejected_parts_total",
    "Parts of records (a ResourceX, or a whole record that cannot be split) that do not convert "
    "to OTLP/JSON, written to the rejects file instead of the data file.",
    ["signal"],
)
FILE_HELPER_RESTARTS = Counter(
    "pipeline_file_sink_helper_restarts_total",
    "Conversion helper processes started again after one died (killed, or crashed on input).",
)
FILE_JSON_FALLBACK_RECORDS = Counter(
    "pipeline_file_sink_json_fallback_records_total",
    "Records the C OTLP/JSON writer handed back to the Python reference converter (a field set "
    "twice, a repeated field split by others, invalid UTF-8, bad framing: otlp/_otlpjson.c), by "
    "signal. The C writer gives no reason, so none is labelled.",
    ["signal"],
)

# prometheus
REMOTE_WRITE_SAMPLES = Counter(
    "pipeline_remote_write_samples", "Samples (and native histogram samples) accepted by remote write."
)
REMOTE_WRITE_DROPPED_SAMPLES = Counter(
    "pipeline_remote_write_dropped_samples", "Samples not written, by reason (conversion or a 4xx answer).",
    ["reason"],
)
REMOTE_WRITE_DROPPED_EXEMPLARS = Counter(
    "pipeline_remote_write_dropped_exemplars", "Exemplars not written by the conversion, by reason.",
    ["reason"],
)
REMOTE_WRITE_DROPPED_EXEMPLAR_LABELS = Counter(
    "pipeline_remote_write_dropped_exemplar_labels",
    "Exemplar attributes left off to keep the label set within 128 characters.",
)
REMOTE_WRITE_REQUESTS = Counter(
    "pipeline_remote_write_requests", "Remote-write requests by HTTP status.", ["status"]
)

# jaeger
JAEGER_REQUESTS = Counter(
    "pipeline_jaeger_requests", "Export calls to Jaeger by gRPC status code.", ["code"]
)
JAEGER_REJECTED_SPANS = Counter(
    "pipeline_jaeger_rejected_spans", "Spans Jaeger reported as rejected in a partial-success answer."
)

# elasticsearch
ES_DOCUMENTS = Counter(
    "pipeline_es_documents", "Documents sent to Elasticsearch by outcome (written, rejected, retried).",
    ["signal", "outcome"],
)

# OTLP forwarding sinks (otlp_grpc, otlp_http, and jaeger, which is otlp_grpc to Jaeger)
OTLP_EXPORT_REQUESTS = Counter(
    "pipeline_otlp_export_requests",
    "Export requests of the OTLP forwarding sinks by sink, signal and answer (gRPC code or HTTP status).",
    ["sink", "signal", "code"],
)
OTLP_REJECTED_ITEMS = Counter(
    "pipeline_otlp_rejected_items",
    "Items (spans, log records, data points) a store reported rejected in a partial-success answer.",
    ["sink", "signal"],
)
