"""KafkaBus: the durable producer side of the spine.

``publish`` returns only after Kafka acknowledged every piece of the batch (``acks=all``,
idempotent producer), so the edge can answer a client "OK" only for data that survives a broker
crash. When Kafka cannot take data the bus says so *quickly* (``BusUnavailable`` within
``publish_timeout_ms``) so clients get a retryable 503 / UNAVAILABLE instead of hanging.

The gateway must start even with Kafka down: ``start`` launches a background task that keeps
(re)connecting, and ``readiness`` explains why it is not ready. After a publish fails on a
connection or timeout error the producer is thrown away and a fresh one is connected, which is
the simplest way to get back to a clean idempotence state (new producer id, empty accumulator)
after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from bus.contract import Batch, BusUnavailable
from bus.kafka import client
from bus.kafka.client import close_producer, describe, durable_producer
from bus.kafka.topics import ensure_topics
from bus.metrics import BATCH_BYTES, PRODUCE_ERRORS, PRODUCE_SECONDS, PRODUCED_BYTES
from otlp import partitioning, wire
from otlp.signals import Signal
from runtime.backoff import Backoff
from settings.config import KafkaConfig

log = logging.getLogger(__name__)


# Bytes a record needs beyond key, value and headers (record batch framing, varints, CRC):
# generous, so a value cut to the budget never trips the broker's message.max.bytes.
_RECORD_OVERHEAD = 256
# Room kept for headers and key when stating the largest item a message can carry; the
# comma-joined correlation ids of a full batch stay well under it.
_ITEM_HEADROOM = 64 * 1024
_RECONNECT_INITIAL_S = 0.2
_RECONNECT_JITTER = 0.2


def reconnect_backoff(cfg: KafkaConfig, max_s: float | None = None) -> Backoff:
    """Between attempts to reach Kafka, for every client of it (bus, source, dead letters): 0.2 s
    doubling up to ``max_s`` (default ``reconnect_backoff_max_ms``), each delay drawn within ±20%
    so the processes that lost the same broker do not all come back at once."""
    ceiling = cfg.reconnect_backoff_max_ms / 1000 if max_s is None else max_s
    return Backoff(_RECONNECT_INITIAL_S, max(ceiling, _RECONNECT_INITIAL_S), jitter=_RECONNECT_JITTER)


class KafkaBus:
    """Bus over an ``AIOKafkaProducer`` that (re)connects in the background."""

    def __init__(self, cfg: KafkaConfig, *, backoff: Backoff | None = None) -> None:
        """``backoff``: between connection attempts (default: ``reconnect_backoff(cfg)``)."""
        self._cfg = cfg
        self._backoff = backoff or reconnect_backoff(cfg)
        self._prefix = cfg.topic_prefix
        self._topics = [s.topic(cfg.topic_prefix) for s in Signal]  # the only topics this bus writes
        self._producer: AIOKafkaProducer | None = None
        self._reason = "kafka: not started"
        self._broken = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._topics_created = False
        self._timeout_s = cfg.publish_timeout_ms / 1000
        self._retry_after_s = cfg.unavailable_retry_after_ms / 1000
        self._turn = 0  # batches published, for the signals spread round robin

    @property
    def max_item_bytes(self) -> int:
        return max_item_bytes(self._cfg)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting; wait briefly so a healthy start is ready at once, never forever."""
        self._stopping = False
        self._task = asyncio.create_task(self._maintain(), name="kafka-bus-connect")
        try:
            await asyncio.wait_for(self._connected.wait(), self._cfg.start_wait_ms / 1000)
        except TimeoutError:
            log.warning("%s; the gateway starts anyway and keeps trying", self._reason)

    async def stop(self) -> None:
        """Flush what the producer holds (bounded), then close."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        producer, self._producer = self._producer, None
        self._connected.clear()
        if producer is not None:
            await close_producer(producer, self._timeout_s)
        self._reason = "kafka: stopped"

    def readiness(self) -> tuple[bool, str]:
        if self._producer is not None:
            return True, f"kafka: connected to {self._cfg.bootstrap_servers}"
        return False, self._reason

    async def _maintain(self) -> None:
        """Connect, hold the producer until a publish reports it broken, reconnect; forever."""
        self._backoff.reset()
        while not self._stopping:
            producer: AIOKafkaProducer | None = None
            try:
                producer = self._new_producer()  # reads the SASL password: may fail, and is retried
                await asyncio.wait_for(client.start(producer, self._cfg), self._cfg.request_timeout_ms / 1000)
                # Once per process: a reconnect after a broker failure needs only a producer. And
                # CreateTopics waits up to request_timeout_ms for the broker that metadata names
                # as controller, which until the cluster fences a crashed broker may be that one:
                # asking again on every reconnect kept the gateway refusing for 30 s while the
                # brokers left were taking writes.
                if self._cfg.create_topics and not self._topics_created:
                    await ensure_topics(self._cfg, self._topics)
                    self._topics_created = True
            except asyncio.CancelledError:
                if producer is not None:
                    await close_producer(producer, 1.0)  # stop() while connecting: leave no client behind
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                self._reason = f"kafka: cannot connect to {self._cfg.bootstrap_servers}: {describe(exc)}"
                delay = self._backoff.next_delay()
                log.warning("%s; retrying in %.1fs", self._reason, delay)
                if producer is not None:
                    await close_producer(producer, 1.0)
                await self._backoff.sleep(delay=delay)
                continue
            log.info("kafka: connected to %s (acks=all, idempotent, compression=%s)",
                     self._cfg.bootstrap_servers, self._cfg.compression)
            self._backoff.reset()
            self._broken.clear()
            # Track only this gateway's topics: with none tracked, aiokafka's periodic refresh
            # (and a forced one) asks for the metadata of every topic in the cluster.
            producer.client.set_topics(self._topics)
            self._producer = producer
            self._connected.set()
            while not self._broken.is_set():
                try:
                    await asyncio.wait_for(self._broken.wait(), self._cfg.health_check_interval_ms / 1000)
                except TimeoutError:
                    await self._probe(producer)
            self._producer = None
            self._connected.clear()
            await close_producer(producer, 1.0)

    async def _probe(self, producer: AIOKafkaProducer) -> None:
        """A metadata round trip for this gateway's topics, so /readyz notices a lost broker even
        while no data flows.

        Only our topics: the metadata of every topic in a shared cluster (thousands of them) is
        decoded in Python on the event loop, which stalled every request for 70-135 ms once per
        ``health_check_interval_ms`` (measured with the bench at 80k log records/s)."""
        try:
            updated = await asyncio.wait_for(producer.client.force_metadata_update(), self._timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._mark_broken(producer, f"health check failed: {describe(exc)}")
            return
        if not updated:
            self._mark_broken(producer, "health check failed: no broker answered a metadata request")

    def _new_producer(self) -> AIOKafkaProducer:
        cfg = self._cfg
        return durable_producer(
            cfg, cfg.client_id, max_request_size=cfg.max_message_bytes,
            compression=None if cfg.compression == "none" else cfg.compression,
            linger_ms=cfg.linger_ms, max_batch_size=cfg.max_message_bytes,
        )

    def _mark_broken(self, producer: AIOKafkaProducer, why: str) -> None:
        # Only the producer that failed: a late failure of an already replaced one changes nothing.
        if self._producer is producer:
            self._reason = f"kafka: {why}; reconnecting"
            log.warning("%s", self._reason)
            self._producer = None
            self._broken.set()

    # -- publishing ---------------------------------------------------------------------------
    async def publish(self, batch: Batch) -> None:
        topic = batch.signal.topic(self._prefix)
        producer = self._producer
        if producer is None:
            PRODUCE_ERRORS.labels(topic, "not_connected").inc()
            raise BusUnavailable(self._reason, self._retry_after_s)
        headers = batch.headers()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                partitions: list[int] = []
                if self._cfg.partition_by != "tenant":
                    # From the metadata the producer holds; a round trip only for a topic it has not met.
                    partitions = list(await producer.partitions_for(topic))
                self._turn += 1
                pieces = message_pieces(batch, partitions, self._cfg.max_message_bytes, headers, self._turn)
                # Enqueue in order (cancelling send() itself is safe: the record is not sent) ...
                futures = [await producer.send(topic, value, key=key, partition=partition, headers=headers)
                           for partition, key, value in pieces]
            # ... then wait for every acknowledgement together, without cancelling them on timeout.
            remaining = max(0.0, self._timeout_s - (time.perf_counter() - started))
            done, pending = await asyncio.wait(futures, timeout=remaining)
            if pending:
                raise TimeoutError(f"{len(pending)} of {len(futures)} message(s) not acknowledged")
            for fut in done:
                fut.result()
        except MessageSizeTooLargeError as exc:
            # A single item bigger than the broker limit: splitting cannot help, nor can retrying.
            PRODUCE_ERRORS.labels(topic, "message_too_large").inc()
            raise BusUnavailable(f"kafka: an item exceeds max_message_bytes: {exc}") from exc
        except (TimeoutError, KafkaError, OSError) as exc:
            kind = _error_kind(exc)
            PRODUCE_ERRORS.labels(topic, kind).inc()
            why = f"publish to {topic} failed within {self._timeout_s:.1f}s: {describe(exc)}"
            if _breaks_producer(exc):
                self._mark_broken(producer, why)
            raise BusUnavailable(f"kafka: {why}", self._retry_after_s) from exc
        PRODUCE_SECONDS.observe(time.perf_counter() - started)
        produced = PRODUCED_BYTES.labels(topic)
        for _, _, value in pieces:
            produced.inc(len(value))
            BATCH_BYTES.observe(len(value))


def max_item_bytes(cfg: KafkaConfig) -> int:
    """The largest serialized request piece (one item with its resource and scope) a message holds.

    The ingest path refuses items above it before batching, with a non-retryable answer: no
    split or retry can ever deliver them, and inside a batch they would fail every request
    that shares it.
    """
    return max(1024, cfg.max_message_bytes - _ITEM_HEADROOM)


Piece = tuple[int | None, bytes, bytes]


def message_pieces(batch: Batch, partitions: Sequence[int], max_message_bytes: int,
                   headers: Sequence[tuple[str, bytes]], turn: int = 0) -> list[Piece]:
    """(partition, key, value) messages for a batch, each within the broker's message size: split,
    never fail. The key is always the tenant.

    ``partitions``: the topic's partition ids (any order). Empty means keyed by tenant
    (``partition_by: tenant``): partition None, so the client hashes the key and all of a
    tenant's data lands on one partition. Otherwise the batch is spread over them by
    ``otlp.partitioning.buckets`` (traces by trace id, metrics by series identity, logs by
    ``turn``), at most one message per partition before the size split. A payload whose
    insides cannot be walked that far (the edge checked them, so not expected) goes whole to the
    partition of ``turn`` rather than failing the batch.
    """
    header_bytes = sum(len(k) + len(v) for k, v in headers)
    key = batch.tenant.encode()
    budget = max_message_bytes - header_bytes - len(key) - _RECORD_OVERHEAD
    if not partitions:
        return [(None, key, piece) for piece in _fit(batch.signal, batch.payload, budget)]
    ids = sorted(partitions)
    try:
        spread = partitioning.buckets(batch.signal, batch.payload, len(ids), turn)
    except wire.WireError:
        spread = {turn % len(ids): batch.payload}
    return [(ids[bucket], key, piece) for bucket, payload in sorted(spread.items())
            for piece in _fit(batch.signal, payload, budget)]


def _fit(signal: Signal, payload: bytes, budget: int) -> list[bytes]:
    if len(payload) <= budget:
        return [payload]
    return wire.split(signal, payload, max(budget, 1024))


def _breaks_producer(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, KafkaTimeoutError, KafkaConnectionError, OSError)):
        return True
    return bool(getattr(exc, "retriable", False) or getattr(exc, "invalid_metadata", False))


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__
