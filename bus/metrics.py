"""The bus's self-metrics (Prometheus), defined once: the Kafka producer's (``gateway_kafka_*``,
served by the gateway) and the Kafka consumer's (``pipeline_consumer_lag``, commit errors,
served by the pipelines)."""

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
