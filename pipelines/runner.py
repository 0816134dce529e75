"""``telemetry-gateway pipelines --sink NAME``: one sink fed by its own Kafka consumer group.

Each sink has its own group (``<group_prefix><sink>``), so sinks progress independently: a slow
Elasticsearch never holds back Prometheus, and scaling a sink out is starting more of these
processes with the same ``--sink``. Sinks are found by name as modules ``pipelines.sinks.<name>``
exposing ``make_sink(cfg) -> Sink`` and imported only when chosen, so a worker for one store does
not import the others' clients.

SIGTERM/SIGINT: the batch in hand is finished and committed, the consumer leaves its group (so
the partitions move at once), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, cast

from prometheus_client import start_http_server

from bus.kafka.consumer import KafkaSource
from bus.kafka.producer import reconnect_backoff
from bus.kafka.topics import ensure_topics
from pipelines.dead_letter import KafkaDeadLetter
from pipelines.pipeline import Pipeline
from pipelines.sinks import SINKS
from pipelines.sinks.base import Sink
from runtime import lifecycle
from runtime.backoff import Backoff
from settings.config import Config

log = logging.getLogger(__name__)



def make_sink(cfg: Config, name: str) -> Sink:
    """Import ``pipelines.sinks.<name>`` and build its sink from the config."""
    if name not in SINKS:
        raise ValueError(f"unknown sink {name!r}; known: {', '.join(SINKS)}")
    module = importlib.import_module(f"pipelines.sinks.{name}")
    factory = getattr(module, "make_sink", None)
    if factory is not None:
        return cast(Sink, factory(cfg))
    raise RuntimeError(f"pipelines.sinks.{name} has no make_sink(cfg)")


async def run(cfg: Config, sink_name: str) -> int:
    """Run one pipeline until SIGTERM/SIGINT; returns the exit code."""
    kcfg = cfg.bus.kafka
    sink = make_sink(cfg, sink_name)
    group = cfg.pipelines.group_prefix + sink_name
    source = KafkaSource(kcfg, group, sink.signals, max_records=cfg.pipelines.max_inflight_records)
    dead_letter = KafkaDeadLetter(kcfg, cfg.pipelines.dead_letter_topic, sink_name)
    pipeline = Pipeline(source, sink, dead_letter=dead_letter,
                        max_records=cfg.pipelines.max_inflight_records,
                        max_unexpected_retries=cfg.pipelines.max_unexpected_retries)
    start_http_server(cfg.pipelines.admin_port, addr=cfg.pipelines.admin_host)

    stopping = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("pipelines %s: %s, finishing the batch in hand", sink_name, sig.name)
        stopping.set()
        pipeline.stop()

    lifecycle.on_stop_signals(on_signal)
    # Whatever started is stopped in reverse, also when a stop signal ends the start half-way.
    async with AsyncExitStack() as stack:
        # Kafka may not be there yet: starting keeps retrying, and a stop signal ends the wait.
        if not await _until_stopped(_start(cfg, sink, source, dead_letter, stack), stopping):
            return 0
        log.info("pipelines %s: consumer group %s on %s -> sink %s; metrics on %s:%d", sink_name, group,
                 kcfg.bootstrap_servers, sink.name, cfg.pipelines.admin_host, cfg.pipelines.admin_port)
        await pipeline.run()
        log.info("pipelines %s: stopped after %d record(s) written, %d dead-lettered", sink_name,
                 pipeline.written, pipeline.dead_lettered)
        return 0


async def _start(cfg: Config, sink: Sink, source: KafkaSource, dead_letter: KafkaDeadLetter,
                 stack: AsyncExitStack) -> None:
    """The sink, then the dead letters, then the consumer: the source joins its group (and takes
    partitions) only once everything its records go to is up, and leaves it first."""
    kcfg = cfg.bus.kafka
    await lifecycle.enter(stack, sink)
    backoff = reconnect_backoff(kcfg)
    if kcfg.create_topics:
        await _retry(lambda: ensure_topics(kcfg, source.topics), "creating topics", backoff)
    await _retry(dead_letter.start, "starting the dead-letter producer", backoff)
    stack.push_async_callback(dead_letter.stop)
    await lifecycle.enter(stack, source)


async def _retry(step: Callable[[], Awaitable[None]], what: str, backoff: Backoff) -> None:
    backoff.reset()
    while True:
        try:
            await step()
            return
        except Exception as exc:  # Kafka errors, connection refused, timeouts: all worth a retry
            delay = backoff.next_delay()
            log.warning("kafka: %s failed (%s); retrying in %.1fs", what, exc, delay)
            await backoff.sleep(delay=delay)


async def _until_stopped(work: Coroutine[Any, Any, None], stopping: asyncio.Event) -> bool:
    """Run ``work`` unless ``stopping`` is set first; True when the work completed."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if task in done:
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
