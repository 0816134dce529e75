"""The bus's self-metrics (Prometheus), defined once: the Kafka producer's (``gateway_kafka_*``,
served by the gateway), the disk spool's (``gateway_spool_*``, served by the gateway) and the Kafka
consumer's (``pipeline_consumer_lag``, commit errors, served by the pipelines)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# kafka/producer
PRODUCE_SECONDS = Histogram(
    "gateway_kafka_produce_seconds",
    "Time from publish() to Kafka's acknowledgement of every piece of a batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PRODUCED_BYTES = Counter(
    "gateway_kafka_produced_bytes_total", "Message value bytes acknowledged by Kafka.", ["topic"]
)
PRODUCE_ERRORS = Counter(
    "gateway_kafka_produce_errors_total",
    "Batches Kafka did not acknowledge, by error (the client got a retryable refusal).",
    ["topic", "error"],
)
BATCH_BYTES = Histogram(
    "gateway_kafka_batch_bytes",
    "Size of each Kafka message value (a batch, or a piece of one after splitting).",
    buckets=(1024, 4096, 16384, 65536, 262144, 524288, 1048576, 4194304),
)

# kafka/client: every client (the gateway's producer, the pipelines' consumers and dead-letter producer,
# topic admin), served by the process that runs it
KAFKA_AUTH_FAILURES = Counter(
    "gateway_kafka_auth_failures_total",
    "Connection attempts of a Kafka client that failed on security, by client (producer, consumer, "
    "admin, dead_letter) and reason (sasl: the broker refused the SASL credentials; tls: the TLS "
    "handshake failed, the broker's certificate untrusted or ours refused). The client keeps retrying.",
    ["client", "reason"],
)

# kafka/consumer
CONSUMER_LAG = Gauge(
    "pipeline_consumer_lag",
    "Records in the partition after the last one this worker took (high watermark - position).",
    ["topic", "partition"],
)
COMMIT_ERRORS = Counter(
    "pipeline_commit_errors_total", "Offset commits that failed and were deferred to the next one.",
    ["error"],
)

# spool (bus/spool): the disk log in front of the bus; gauges summed over the workers
SPOOL_BYTES = Gauge(
    "gateway_spool_bytes", "Bytes of unacknowledged records in the spool (on disk and being written).",
    multiprocess_mode="livesum",
)
SPOOL_MAX_BYTES = Gauge(
    "gateway_spool_max_bytes", "spool.max_bytes of each worker taking new data, summed: what "
    "gateway_spool_bytes may reach before batches are refused as full.",
    multiprocess_mode="livesum",
)
SPOOL_RECORDS = Gauge(
    "gateway_spool_records", "Batches in the spool not yet acknowledged by the bus below it.",
    multiprocess_mode="livesum",
)
SPOOL_OLDEST_AGE = Gauge(
    "gateway_spool_oldest_age_seconds", "Age of the oldest unacknowledged record in the spool (0: empty).",
    multiprocess_mode="livemax",
)
SPOOL_APPENDED = Counter(
    "gateway_spool_appended_records_total", "Batches written to the spool (client answered after it).",
    ["signal"],
)
SPOOL_APPENDED_ITEMS = Counter(
    "gateway_spool_appended_items_total", "Items in the batches written to the spool.", ["signal"],
)
SPOOL_APPENDED_BYTES = Counter(
    "gateway_spool_appended_bytes_total", "Framed bytes written to the spool.",
)
SPOOL_AMBIGUOUS_ITEMS = Counter(
    "gateway_spool_ambiguous_items_total", "Items spooled after a publish below failed mid-way (timed out "
    "or broke after sending): the bus may hold them already, so their replay may duplicate them. Without "
    "a crash this bounds the duplicates.", ["signal"],
)
SPOOL_REPLAYED = Counter(
    "gateway_spool_replayed_records_total", "Spooled batches the bus below acknowledged (then released).",
    ["signal"],
)
SPOOL_REPLAYED_ITEMS = Counter(
    "gateway_spool_replayed_items_total", "Items in the spooled batches the bus below acknowledged.",
    ["signal"],
)
SPOOL_REPLAYED_BYTES = Counter(
    "gateway_spool_replayed_bytes_total", "Payload bytes of spooled batches the bus below acknowledged.",
)
SPOOL_REPLAY_ERRORS = Counter(
    "gateway_spool_replay_errors_total", "Attempts to hand a spooled batch to the bus below that failed "
    "(retried with backoff; nothing is dropped).",
)
SPOOL_RECOVERED = Counter(
    "gateway_spool_recovered_records_total", "Records found at start-up (a previous run's, or a dead "
    "worker's adopted directory): each is resent once, so this bounds the duplicates a crash can cause.",
)
SPOOL_CORRUPT = Counter(
    "gateway_spool_corrupt_records_total", "Records that failed their checksum, quarantined and skipped.",
)
SPOOL_TORN_BYTES = Counter(
    "gateway_spool_torn_bytes_total", "Bytes of torn tails (a write cut by a crash, never acknowledged) cut "
    "at start-up.",
)
SPOOL_REFUSED = Counter(
    "gateway_spool_refused_batches_total", "Batches the spool refused (client got 503 / UNAVAILABLE with a "
    "retry hint), by reason: full, disk_floor, max_age, write_error.",
    ["reason"],
)
SPOOL_FSYNC_SECONDS = Histogram(
    "gateway_spool_fsync_seconds", "Duration of each group commit's fdatasync.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SPOOL_GROUP_RECORDS = Histogram(
    "gateway_spool_group_records", "Records written by one group commit (one fsync for all of them).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
