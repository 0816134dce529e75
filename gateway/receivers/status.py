"""How each refusal reason is said on each transport, per the OTLP specification.

One table so OTLP/HTTP and OTLP/gRPC refuse the same thing the same way: retryable reasons
(429/503, RESOURCE_EXHAUSTED/UNAVAILABLE) carry a retry hint, the rest do not.
"""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.ingest import Reason

HTTP_STATUS: dict[Reason, int] = {
    "malformed": 400,
    "unauthenticated": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "bus_unavailable": 503,
    "overloaded": 503,
    "shutting_down": 503,
}

GRPC_CODE: dict[Reason, grpc.StatusCode] = {
    "malformed": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "not_found": grpc.StatusCode.UNIMPLEMENTED,
    "method_not_allowed": grpc.StatusCode.UNIMPLEMENTED,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unsupported_media_type": grpc.StatusCode.INVALID_ARGUMENT,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "bus_unavailable": grpc.StatusCode.UNAVAILABLE,
    "overloaded": grpc.StatusCode.UNAVAILABLE,
    "shutting_down": grpc.StatusCode.UNAVAILABLE,
}

# google.rpc.Code numbers, for the ``code`` of a google.rpc.Status in HTTP error bodies.
RPC_CODE: dict[Reason, int] = {reason: GRPC_CODE[reason].value[0] for reason in GRPC_CODE}


def rpc_status(reason: Reason, message: str, retry_after_s: float | None = None) -> status_pb2.Status:
    """A google.rpc.Status; with a retry delay it carries google.rpc.RetryInfo as the spec asks."""
    st = status_pb2.Status(code=RPC_CODE.get(reason, code_pb2.UNKNOWN), message=message)
    if retry_after_s is not None:
        secs = int(retry_after_s)
        delay = duration_pb2.Duration(seconds=secs, nanos=int((retry_after_s - secs) * 1e9))
        st.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return st

