"""A stand-in for the ``client`` of an aiokafka producer, for unit tests of the bus's connect
loop: its metadata refresh always succeeds and topic tracking is accepted (pure logic only)."""

from __future__ import annotations

from collections.abc import Sequence


class HealthyClient:
    """What ``KafkaBus`` calls on ``producer.client``: ``set_topics`` and ``force_metadata_update``."""

    def set_topics(self, topics: Sequence[str]) -> None:
        self.topics = list(topics)

    async def force_metadata_update(self) -> bool:
        return True
