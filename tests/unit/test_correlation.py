"""Correlation ids: UUIDv7 minting and acceptance of client ids."""

from __future__ import annotations

import time
import uuid

import pytest

from gateway.correlation import accept, new_id


def test_new_id_is_uuid_v7_with_current_time() -> None:
    before = time.time_ns() // 1_000_000
    cid = new_id()
    after = time.time_ns() // 1_000_000
    u = uuid.UUID(cid)
    assert str(u) == cid
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after


def test_new_ids_are_unique_and_time_ordered_by_millisecond() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("value", ["0192a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b", "req-42", "a", "A.b_c-9",
                                   "x" * 64])
def test_accept_keeps_safe_ids(value: str) -> None:
    assert accept(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 65, "a b", "a,b", "a\r\nx-evil: 1", "é", "{uuid}"])
def test_accept_refuses_unsafe_ids(value: str | None) -> None:
    assert accept(value) is None
