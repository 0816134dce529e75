"""OTLP ``AnyValue``/``KeyValue`` to plain Python values, shared by the conversions.

The conversions only ever need JSON-compatible values (Elasticsearch documents) or strings
(Prometheus label values), so one small decoder keeps both consistent about bytes, arrays
and maps.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otlp.signals import ATTR_TENANT, DEFAULT_TENANT

JSONValue = Any


def any_value(v: AnyValue) -> JSONValue:
    """Plain value of an AnyValue; bytes become base64 (JSON has no bytes), unset is None."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def attributes(kvs: Iterable[KeyValue]) -> dict[str, JSONValue]:
    """Attributes keyed by their full dotted name, as Elastic's OTel-native mode stores them."""
    out: dict[str, JSONValue] = {}
    for kv in kvs:
        v = kv.value
        # Strings are most attributes: skip the call for them (this loop is the conversions' hot spot).
        out[kv.key] = v.string_value if v.WhichOneof("value") == "string_value" else any_value(v)
    return out


def as_label_value(v: AnyValue) -> str:
    """String form of an AnyValue for a Prometheus label: scalars as text, the rest as JSON."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    if kind is None:
        return ""
    return orjson.dumps(any_value(v)).decode()


def resource_tenant(kvs: Iterable[KeyValue], fallback: str) -> str:
    """The gateway-stamped ``tenant.id`` of a resource, else the record's tenant header."""
    for kv in kvs:
        if kv.key == ATTR_TENANT and kv.value.string_value:
            return kv.value.string_value
    return fallback or DEFAULT_TENANT
