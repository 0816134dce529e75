"""What a store's answer means for the data: one classifier for HTTP, one for gRPC, shared by
every sink (as Vector's ``RetryLogic`` and the Collector's ``exporterhelper`` errors are).

Three verdicts:

- ``DONE``: the store holds the data.
- ``RETRY``: nothing against the data. The store is down, busy or misconfigured (429, 5xx, and
  401/403/404/405/407/408/421/425: a wrong URL or credentials, fixed by an operator while the
  data waits in Kafka; dropping on them would turn a typo into silent loss). The answer's
  ``Retry-After`` (HTTP, seconds or a date) or ``RetryInfo`` (gRPC status details) is kept as
  ``retry_after_s``.
- ``REJECT``: the data itself is refused (any other 4xx; gRPC ``INVALID_ARGUMENT``, and
  ``INTERNAL`` "error unmarshalling request", which is how grpc-go answers bytes that do not
  decode before the service's code runs). A retry cannot help: the sink isolates the refused
  parts for the dead letters (or, where the protocol cannot say which, drops and counts them).

``credentials_refused`` picks out the answers refusing our credentials (401 / 403,
UNAUTHENTICATED / PERMISSION_DENIED: retried, as above), which ``count_credentials_refused``
counts per sink in ``pipeline_sink_auth_failures_total``, so a refused secret can be alerted on.

``Throttle`` keeps a sink from sending again before the time a store asked for.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from pipelines.metrics import SINK_AUTH_FAILURES

# Longest wait a store may ask for that is honoured; a larger one is cut to this.
MAX_RETRY_AFTER_S = 60.0

# 4xx answers about the endpoint or the connection, not the data.
RETRY_HTTP_4XX = frozenset({401, 403, 404, 405, 407, 408, 421, 425, 429})

# Answers that refuse our credentials (not the data): counted in pipeline_sink_auth_failures_total
# and retried (an operator fixes or rotates the secret while the data waits in Kafka).
REFUSED_CREDENTIALS = frozenset({"401", "403", grpc.StatusCode.UNAUTHENTICATED.name,
                                 grpc.StatusCode.PERMISSION_DENIED.name})

# grpc-go's answer (as INTERNAL) when the request bytes do not decode.
GRPC_UNMARSHAL_ERROR = "grpc: error unmarshalling request"
GRPC_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


class Verdict(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    detail: str = ""
    retry_after_s: float | None = None

    @property
    def done(self) -> bool:
        return self.verdict is Verdict.DONE

    @property
    def retry(self) -> bool:
        return self.verdict is Verdict.RETRY

    @property
    def reject(self) -> bool:
        return self.verdict is Verdict.REJECT


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delay-seconds or an HTTP date), capped; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    left = when.timestamp() - (time.time() if now is None else now)
    return min(max(left, 0.0), MAX_RETRY_AFTER_S)


def classify_http(status: int, headers: Mapping[str, str] | None = None, detail: str = "", *,
                  done: Iterable[int] = ()) -> Answer:
    """The verdict on an HTTP answer. ``done``: statuses a store uses to say "already there"
    (Elasticsearch's 409 on ``create``), which count as written."""
    if 200 <= status < 300 or status in done:
        return Answer(Verdict.DONE, detail)
    if 400 <= status < 500 and status not in RETRY_HTTP_4XX:
        return Answer(Verdict.REJECT, detail or f"http {status}")
    wait = retry_after((headers or {}).get("Retry-After")) if status in (429, 503) else None
    return Answer(Verdict.RETRY, detail or f"http {status}", wait)


def credentials_refused(code: int | str | grpc.StatusCode) -> bool:
    """Whether a store's answer refuses our credentials: HTTP 401 / 403 (an int or its text) or
    gRPC UNAUTHENTICATED / PERMISSION_DENIED (a ``StatusCode`` or its name)."""
    if isinstance(code, grpc.StatusCode):
        code = code.name
    return str(code) in REFUSED_CREDENTIALS


def count_credentials_refused(sink: str, code: int | str | grpc.StatusCode) -> bool:
    """Count ``code`` in ``pipeline_sink_auth_failures_total{sink, code}`` when it refuses our
    credentials (``credentials_refused``); whether it did. Once per answer: call it where the
    answer of one request is read."""
    if not credentials_refused(code):
        return False
    SINK_AUTH_FAILURES.labels(sink, code.name if isinstance(code, grpc.StatusCode) else str(code)).inc()
    return True


def grpc_retry_delay(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The ``RetryInfo.retry_delay`` in a call's trailing metadata (``grpc-status-details-bin``)."""
    for key, value in metadata or ():
        if key != GRPC_STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:  # a peer's malformed details must not fail the sink
            return None
        for any_detail in status.details:
            if any_detail.type_url == _RETRY_INFO_TYPE:
                info = error_details_pb2.RetryInfo()
                if any_detail.Unpack(info):
                    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                    return float(min(max(delay, 0.0), MAX_RETRY_AFTER_S))
    return None


def classify_grpc(code: grpc.StatusCode, details: str | None = None,
                  trailing_metadata: Iterable[tuple[str, str | bytes]] | None = None) -> Answer:
    """The verdict on a gRPC status."""
    text = details or ""
    if code is grpc.StatusCode.OK:
        return Answer(Verdict.DONE, text)
    if code is grpc.StatusCode.INVALID_ARGUMENT or (
            code is grpc.StatusCode.INTERNAL and text.startswith(GRPC_UNMARSHAL_ERROR)):
        return Answer(Verdict.REJECT, f"{code.name}: {text}" if text else code.name)
    return Answer(Verdict.RETRY, f"{code.name}: {text}" if text else code.name,
                  grpc_retry_delay(trailing_metadata))


class Throttle:
    """The earliest time a store asked to be sent to again; ``wait`` sleeps until then."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._not_before = 0.0

    def note(self, answer: Answer) -> None:
        if answer.retry_after_s:
            self._not_before = max(self._not_before, self._clock() + answer.retry_after_s)

    def remaining(self) -> float:
        return max(self._not_before - self._clock(), 0.0)

    async def wait(self) -> None:
        if (left := self.remaining()) > 0:
            await asyncio.sleep(left)
