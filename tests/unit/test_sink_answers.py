"""The shared answer classifiers: every sink reads HTTP and gRPC answers the same way."""

from __future__ import annotations

import email.utils

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from pipelines.sinks.answers import (
    MAX_RETRY_AFTER_S,
    Throttle,
    Verdict,
    classify_grpc,
    classify_http,
    grpc_retry_delay,
    retry_after,
)

D, R, X = Verdict.DONE, Verdict.RETRY, Verdict.REJECT


@pytest.mark.parametrize(("status", "verdict"), [
    (200, D), (202, D), (204, D),
    (400, X), (413, X), (415, X), (422, X), (409, X),
    (401, R), (403, R), (404, R), (405, R), (407, R), (408, R), (421, R), (425, R), (429, R),
    (500, R), (502, R), (503, R), (504, R),
    (301, R), (100, R),
])
def test_http_statuses(status: int, verdict: Verdict) -> None:
    assert classify_http(status).verdict is verdict


def test_http_already_there_counts_as_done_where_the_sink_says_so() -> None:
    assert classify_http(409, done=(409,)).verdict is D


@pytest.mark.parametrize(("status", "header", "wait"), [
    (429, "7", 7.0), (503, "0", 0.0), (503, "86400", MAX_RETRY_AFTER_S), (429, "soon", None),
    (500, "7", None),  # only 429 and 503 carry a meaningful Retry-After
    (429, None, None),
])
def test_http_retry_after_seconds(status: int, header: str | None, wait: float | None) -> None:
    answer = classify_http(status, {"Retry-After": header} if header is not None else {})
    assert answer.verdict is R and answer.retry_after_s == wait


def test_http_retry_after_as_a_date() -> None:
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after(when, now=1_000_000) == pytest.approx(30.0)
    assert retry_after(when, now=1_000_100) == 0.0


@pytest.mark.parametrize(("code", "details", "verdict"), [
    (grpc.StatusCode.OK, "", D),
    (grpc.StatusCode.INVALID_ARGUMENT, "bad trace id", X),
    (grpc.StatusCode.INTERNAL, "grpc: error unmarshalling request: proto: cannot parse", X),
    (grpc.StatusCode.INTERNAL, "something broke", R),
    (grpc.StatusCode.UNAVAILABLE, "", R),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "", R),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "", R),
    (grpc.StatusCode.UNIMPLEMENTED, "", R),
    (grpc.StatusCode.UNAUTHENTICATED, "", R),
    (grpc.StatusCode.PERMISSION_DENIED, "", R),
    (grpc.StatusCode.CANCELLED, "", R),
    (grpc.StatusCode.ABORTED, "", R),
    (grpc.StatusCode.DATA_LOSS, "", R),
])
def test_grpc_codes(code: grpc.StatusCode, details: str, verdict: Verdict) -> None:
    assert classify_grpc(code, details).verdict is verdict


def _status_details(seconds: int, nanos: int = 0) -> bytes:
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds, nanos=nanos))
    detail = AnyProto()
    detail.Pack(info)
    return status_pb2.Status(code=8, message="slow down", details=[detail]).SerializeToString()


def test_grpc_retry_info_is_read_from_the_trailing_metadata() -> None:
    md = [("grpc-status-details-bin", _status_details(2, 500_000_000))]
    answer = classify_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", md)
    assert answer.verdict is R and answer.retry_after_s == pytest.approx(2.5)
    assert grpc_retry_delay([("grpc-status-details-bin", _status_details(3600))]) == MAX_RETRY_AFTER_S
    assert grpc_retry_delay([("grpc-status-details-bin", b"\xff\xff")]) is None
    assert grpc_retry_delay([("other", "x")]) is None and grpc_retry_delay(None) is None


async def test_throttle_waits_until_the_time_asked_for() -> None:
    now = [100.0]
    throttle = Throttle(clock=lambda: now[0])
    throttle.note(classify_http(429, {"Retry-After": "5"}))
    assert throttle.remaining() == 5.0
    now[0] = 104.0
    assert throttle.remaining() == pytest.approx(1.0)
    throttle.note(classify_http(503))  # no Retry-After: the earlier time stands
    now[0] = 105.0
    assert throttle.remaining() == 0.0
    await throttle.wait()  # returns at once
