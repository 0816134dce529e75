"""Rejecting one part of a record (what ``pipelines.convert.parts`` isolates) for the dead letters."""

from __future__ import annotations

import dataclasses

from bus.contract import BusRecord
from pipelines.sinks.base import Rejection


def part_rejection(record: BusRecord, part: bytes, reason: str) -> Rejection:
    """A ``Rejection`` of ``part`` of ``record``: the record itself when the part is all of it.

    Otherwise a copy of the record whose value is only the part (an Export request of its own),
    so the dead-letter topic gets the bad part, with the record's key, headers and coordinates,
    and not the parts that were written. The pipeline tells records apart by identity, so a
    copy leaves the original counted as written.
    """
    if part == record.value:
        return Rejection(record, reason)
    return Rejection(dataclasses.replace(record, value=part), reason)
