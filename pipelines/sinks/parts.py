"""Rejecting one part of a record (what ``pipelines.convert.parts`` isolates) for the dead letters."""

from __future__ import annotations

from bus.contract import BusRecord
from pipelines.sinks.base import Rejection


def part_rejection(record: BusRecord, part: bytes, reason: str) -> Rejection:
    """A ``Rejection`` of ``part`` of ``record``: of the whole record when the part is all of it.

    Otherwise ``Rejection.part`` holds the part (an Export request of its own), so the
    dead-letter topic gets the bad part, with the record's key, headers and coordinates, and not
    the parts that were written.
    """
    return Rejection(record, reason, None if part == record.value else part)


def refuses_whole(rejected: list[Rejection] | tuple[Rejection, ...], record: BusRecord) -> bool:
    """Whether ``rejected`` refuses all of ``record`` (not only parts of it)."""
    return any(r.record is record and r.part is None for r in rejected)
