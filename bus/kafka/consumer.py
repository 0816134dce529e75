"""A ``Source`` over a Kafka consumer group: at-least-once, offsets committed only after the sink.

Auto-commit is off. ``commit(records)`` is called by the pipeline only after the sink
acknowledged those records; it commits, per partition, the offset after the last acknowledged
record. When a rebalance takes partitions away, whatever was acknowledged but not yet committed
is committed in ``on_partitions_revoked`` so the next owner starts exactly after it.

While the sink is failing transiently the pipeline pauses every assigned partition (no new
fetches pile up in memory) and keeps polling, which keeps this member alive in its group
(``max.poll.interval.ms``) without taking more work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bus.contract import BusRecord
from bus.kafka import client
from bus.kafka.producer import reconnect_backoff
from bus.metrics import COMMIT_ERRORS, CONSUMER_LAG
from otlp.signals import Signal
from runtime.backoff import Backoff
from settings.config import KafkaConfig

log = logging.getLogger(__name__)


class KafkaSource:
    """Consumer group ``group_id`` over the OTLP topics of ``signals``."""

    def __init__(self, cfg: KafkaConfig, group_id: str, signals: Iterable[Signal], *,
                 max_records: int = 500, start_backoff_max_s: float | None = None,
                 backoff: Backoff | None = None) -> None:
        """``backoff``: between attempts to join while Kafka is not there (default: the bus's
        ``reconnect_backoff``, up to ``start_backoff_max_s`` or ``reconnect_backoff_max_ms``)."""
        self._cfg = cfg
        self.group_id = group_id
        self.topics = sorted(s.topic(cfg.topic_prefix) for s in signals)
        self._signal_of = {s.topic(cfg.topic_prefix): s for s in signals}
        self._max_records = max_records
        self._backoff = backoff or reconnect_backoff(cfg, start_backoff_max_s)
        self._consumer: AIOKafkaConsumer | None = None
        # Next offset to commit per partition (acknowledged by the sink, not yet committed).
        self._acked: dict[TopicPartition, int] = {}
        self._position: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._lag_refreshed = 0.0  # monotonic time of the last end-offset request while paused

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("KafkaSource is not started")
        return self._consumer

    async def start(self) -> None:
        """Join the group; keep trying while Kafka is not there (a worker may start before it)."""
        self._backoff.reset()
        while True:
            consumer: AIOKafkaConsumer | None = None
            try:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._cfg.bootstrap_servers,
                    client_id=f"{self._cfg.client_id}-{self.group_id}",
                    group_id=self.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_records=self._max_records,
                    request_timeout_ms=self._cfg.request_timeout_ms,
                    **client.security(self._cfg),
                )
                await client.start(consumer, self._cfg)
            except (KafkaError, OSError) as exc:
                delay = self._backoff.next_delay()
                log.warning("kafka: cannot connect to %s (%s); retrying in %.1fs",
                            self._cfg.bootstrap_servers, exc, delay)
                if consumer is not None:
                    await consumer.stop()
                await self._backoff.sleep(delay=delay)
                continue
            consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
            self._consumer = consumer
            log.info("kafka: consumer group %s subscribed to %s", self.group_id, ", ".join(self.topics))
            return

    async def stop(self) -> None:
        """Commit what was acknowledged, then leave the group (so the next member starts at once)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            await self._commit_acked(consumer, None)
        finally:
            await consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> Sequence[BusRecord]:
        consumer = self.consumer
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[BusRecord] = []
        for tp, msgs in batches.items():
            out.extend(self._record(m) for m in msgs)
            if msgs:
                self._position[tp] = msgs[-1].offset + 1
        self._update_lag(consumer)
        return out

    def _record(self, m: ConsumerRecord[bytes, bytes]) -> BusRecord:
        headers = {k: v.decode("utf-8", "replace") for k, v in (m.headers or ())}
        return BusRecord(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key,
                         value=m.value or b"", headers=headers, signal=self._signal_of[m.topic])

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            pos = self._position.get(tp)
            if high is not None and pos is not None:
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))

    async def commit(self, records: Sequence[BusRecord]) -> None:
        """Commit, per partition, the offset after the last record the sink acknowledged."""
        self.mark_acked(records)
        await self._commit_acked(self.consumer, None)

    def mark_acked(self, records: Sequence[BusRecord]) -> None:
        """Remember that the sink acknowledged ``records``; committed now, on revocation or at stop."""
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset + 1 > self._acked.get(tp, -1):
                self._acked[tp] = r.offset + 1

    async def _commit_acked(self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None) -> None:
        async with self._lock:
            assigned = consumer.assignment()
            offsets = {tp: OffsetAndMetadata(off, "") for tp, off in self._acked.items()
                       if tp in assigned and (only is None or tp in only)}
            # Records of partitions taken away by a rebalance cannot be committed by us; their
            # next owner re-reads them (at-least-once) and idempotent sinks absorb the repeat.
            for tp in list(self._acked):
                if tp not in assigned:
                    del self._acked[tp]
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("kafka: commit of %d partition(s) failed (rebalance?): %s", len(offsets), exc)
                return
            except KafkaError as exc:
                # Broker unreachable: keep the offsets and commit them with the next batch (or on
                # revocation/stop). Until then a crash would only mean redelivery, never loss.
                COMMIT_ERRORS.labels(type(exc).__name__).inc()
                log.warning("kafka: commit of %d partition(s) deferred: %s", len(offsets), exc)
                return
            for tp, om in offsets.items():
                if self._acked.get(tp) == om.offset:
                    del self._acked[tp]

    # -- pause while the sink is failing -----------------------------------------------------------
    def pause(self) -> None:
        consumer = self.consumer
        consumer.pause(*consumer.assignment())

    def resume(self) -> None:
        consumer = self.consumer
        consumer.resume(*consumer.paused())

    async def keepalive(self) -> None:
        """Poll without taking records so the group keeps this member while the sink is down.

        Partitions assigned by a rebalance since ``pause()`` are paused too; anything such a poll
        still returns is sought back, so no record is skipped.
        """
        consumer = self.consumer
        self.pause()
        batches = await consumer.getmany(timeout_ms=0, max_records=1)
        for tp, msgs in batches.items():
            if msgs:
                consumer.seek(tp, msgs[0].offset)
        await self._refresh_lag(consumer)

    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """The lag while paused: a paused consumer fetches nothing, so the high watermarks it
        knows stop moving and the gauge would hold still through a store outage. Ask the
        brokers for the end offsets instead, at most once a second."""
        now = time.monotonic()
        if now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            ends = await consumer.end_offsets(assigned)
        except KafkaError as exc:
            log.debug("kafka: end offsets for the lag not available: %s", exc)
            return
        for tp, end in ends.items():
            pos = self._position.get(tp)
            if pos is not None:
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - pos))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            await self._commit_acked(consumer, revoked)
        for tp in revoked:
            self._position.pop(tp, None)
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(tp.topic, str(tp.partition))


LAG_REFRESH_S = 1.0


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("kafka: group %s assigned %s", self._source.group_id,
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)))
