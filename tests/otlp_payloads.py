"""Realistic OTLP Export requests for tests: the builders live in ``bench.payloads``.

The bench is shipped and tests are not, so the bench owns the builders and tests import them
from here (or from ``bench.payloads``) under the same names as before.
"""

from __future__ import annotations

from bench.payloads import (
    BASE_TIME_NS,
    REQUEST_TYPES,
    item_count,
    kv,
    logs_request,
    metrics_request,
    payload,
    request,
    resource,
    scope,
    spans,
    traces_request,
)

__all__ = [
    "BASE_TIME_NS",
    "REQUEST_TYPES",
    "item_count",
    "kv",
    "logs_request",
    "metrics_request",
    "payload",
    "request",
    "resource",
    "scope",
    "spans",
    "traces_request",
]
