"""The ingest edge's self-metrics (Prometheus), defined once so receivers only count.

With ``--workers N`` every worker shares the admin port through SO_REUSEPORT, so a scrape lands
on one random worker. To make that one scrape describe the whole gateway the server runs
prometheus_client in multiprocess mode (a ``PROMETHEUS_MULTIPROC_DIR`` per gateway run, created
by the parent before any worker imports this module); ``registry()`` then aggregates the files of
all workers. With one worker the default in-process registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

received_items = Counter(
    "gateway_received_items", "Items (spans, log records, metric data points) accepted.",
    ["signal", "transport", "tenant"],
)
received_bytes = Counter(
    "gateway_received_bytes", "Request bytes accepted (after decompression, protobuf).",
    ["signal", "transport", "tenant"],
)
refused_items = Counter(
    "gateway_refused_items", "Items refused or rejected (partial success included).",
    ["signal", "reason"],
)
refused_requests = Counter(
    "gateway_refused_requests", "Requests answered with an error status.",
    ["signal", "transport", "reason"],
)
incomplete_requests = Counter(
    "gateway_incomplete_requests",
    "Requests that ended without an answer delivered: the client closed or cancelled (cause "
    "client_closed) or was too slow (cause timeout, answered 408 on HTTP). stage: head, body "
    "(still receiving) or answer (complete, being handled).",
    ["transport", "stage", "cause"],
)
batch_bytes = Histogram(
    "gateway_batch_bytes", "Size of batches handed to the bus.", ["signal"],
    buckets=(1024, 8192, 65536, 262144, 524288, 1048576, 2097152, 4194304, 8388608),
)
batch_items = Histogram(
    "gateway_batch_items", "Items in batches handed to the bus.", ["signal"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000, 100000),
)
flush_seconds = Histogram(
    "gateway_flush_seconds", "Time to publish one batch to the bus.", ["signal"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
publish_errors = Counter(
    "gateway_publish_errors", "Publishes that failed with an unexpected error (answered as 503).",
    ["signal", "error"],
)
inflight_requests = Gauge(
    "gateway_inflight_requests", "Export requests being handled now.", ["transport"],
    multiprocess_mode="livesum",
)
request_seconds = Histogram(
    "gateway_request_seconds", "Time from a complete request to its answer.", ["signal", "transport"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

ready = Gauge(
    "gateway_ready", "1: this worker is ready (its own part of /readyz: receivers listening, the bus "
    "taking data or the spool absorbing an outage), 0: not.", ["worker"],
    multiprocess_mode="livemax",
)
tls_certificate_expiry = Gauge(
    "gateway_tls_certificate_expiry_timestamp_seconds", "notAfter of the certificate served, as a Unix "
    "time, set when it is loaded or reloaded; listener: server (OTLP/gRPC and OTLP/HTTP, server.tls) or "
    "admin (admin.tls). The soonest of the workers' with --workers N.", ["listener"],
    multiprocess_mode="livemin",
)
tls_reload_failures = Counter(
    "gateway_tls_reload_failures", "Reloads of changed TLS files that did not load, so the previous "
    "certificate, key and client CA stay in service; listener: server or admin. Counted once per "
    "change on disk that does not load (gateway_tls_reload_failing says it still does not).", ["listener"],
)
tls_reload_failing = Gauge(
    "gateway_tls_reload_failing", "1 while the TLS files on disk changed but do not load (the previous "
    "certificate, key and client CA are served), 0 once a reload succeeds or the files are back to the "
    "set served; listener: server or admin. The highest of the live workers' with --workers N, so N "
    "workers failing read 1, not N.", ["listener"],
    multiprocess_mode="livemax",
)


def registry() -> CollectorRegistry:
    """The registry to expose: all workers' files in multiprocess mode, else this process."""
    if os.environ.get(MULTIPROC_ENV):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        return reg
    return REGISTRY


def exposition() -> bytes:
    """The text exposition served on ``/metrics``."""
    return generate_latest(registry())


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (the parent calls this when a worker exits)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
