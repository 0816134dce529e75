"""Hand-written OTLP/JSON requests land exactly like their protobuf twins.

The JSON is written out by hand, as the OTLP spec shows it (hex trace/span ids, int64 as
strings, enums as integers, lowerCamelCase), and the twins are built with the protobuf classes,
so neither side goes through the gateway's own converter. Both are posted with the same
correlation id; the two file-sink lines must be identical.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from tests.gateway_process import GatewayProcess, resource_attrs, running_gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "eee19b7ec3c1b173"
T0 = 1_544_712_660_000_000_000
T1 = 1_544_712_661_000_000_000
RESOURCE_JSON = {"attributes": [{"key": "service.name", "value": {"stringValue": "json-twin"}}]}

TRACES_JSON: dict[str, Any] = {"resourceSpans": [{
    "resource": RESOURCE_JSON,
    "scopeSpans": [{
        "scope": {"name": "lib", "version": "1.0"},
        "spans": [{
            "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": PARENT_ID, "name": "GET /cart",
            "kind": 2, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T1),
            "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}},
                           {"key": "retry", "value": {"boolValue": True}}],
            "events": [{"timeUnixNano": str(T0 + 5), "name": "cache.miss"}],
            "links": [{"traceId": TRACE_ID, "spanId": PARENT_ID}],
            "status": {"code": 2, "message": "boom"},
        }],
    }],
}]}

LOGS_JSON: dict[str, Any] = {"resourceLogs": [{
    "resource": RESOURCE_JSON,
    "scopeLogs": [{
        "scope": {"name": "lib"},
        "logRecords": [{
            "timeUnixNano": str(T0), "observedTimeUnixNano": str(T1), "severityNumber": 9,
            "severityText": "INFO", "body": {"stringValue": "order placed"},
            "attributes": [{"key": "order.id", "value": {"intValue": "9007199254740993"}}],
            "traceId": TRACE_ID, "spanId": SPAN_ID, "flags": 1,
        }],
    }],
}]}

METRICS_JSON: dict[str, Any] = {"resourceMetrics": [{
    "resource": RESOURCE_JSON,
    "scopeMetrics": [{
        "scope": {"name": "lib"},
        "metrics": [
            {"name": "orders", "unit": "{order}", "sum": {
                "aggregationTemporality": 2, "isMonotonic": True,
                "dataPoints": [{"startTimeUnixNano": str(T0), "timeUnixNano": str(T1), "asInt": "5",
                                "attributes": [{"key": "method", "value": {"stringValue": "card"}}]}]}},
            {"name": "latency", "unit": "s", "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [{"startTimeUnixNano": str(T0), "timeUnixNano": str(T1), "count": "3",
                                "sum": 4.5, "bucketCounts": ["1", "2"], "explicitBounds": [1.0]}]}},
            {"name": "temperature", "gauge": {
                "dataPoints": [{"timeUnixNano": str(T1), "asDouble": 21.5}]}},
        ],
    }],
}]}


def _kv(key: str, **value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    for field, v in value.items():
        setattr(kv.value, field, v)
    return kv


def traces_twin() -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", string_value="json-twin"))
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "lib", "1.0"
    span = ss.spans.add(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID),
                        parent_span_id=bytes.fromhex(PARENT_ID), name="GET /cart", kind=2,
                        start_time_unix_nano=T0, end_time_unix_nano=T1)
    span.attributes.extend([_kv("http.response.status_code", int_value=200), _kv("retry", bool_value=True)])
    span.events.add(time_unix_nano=T0 + 5, name="cache.miss")
    span.links.add(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(PARENT_ID))
    span.status.code, span.status.message = 2, "boom"
    return req.SerializeToString()


def logs_twin() -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", string_value="json-twin"))
    sl = rl.scope_logs.add()
    sl.scope.name = "lib"
    rec = sl.log_records.add(time_unix_nano=T0, observed_time_unix_nano=T1, severity_number=9,
                             severity_text="INFO", trace_id=bytes.fromhex(TRACE_ID),
                             span_id=bytes.fromhex(SPAN_ID), flags=1)
    rec.body.string_value = "order placed"
    rec.attributes.append(_kv("order.id", int_value=9007199254740993))
    return req.SerializeToString()


def metrics_twin() -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", string_value="json-twin"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "lib"
    orders = sm.metrics.add(name="orders", unit="{order}")
    orders.sum.aggregation_temporality, orders.sum.is_monotonic = 2, True
    dp = orders.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=T1, as_int=5)
    dp.attributes.append(_kv("method", string_value="card"))
    latency = sm.metrics.add(name="latency", unit="s")
    latency.histogram.aggregation_temporality = 2
    latency.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T1, count=3, sum=4.5,
                                      bucket_counts=[1, 2], explicit_bounds=[1.0])
    temp = sm.metrics.add(name="temperature")
    temp.gauge.data_points.add(time_unix_nano=T1, as_double=21.5)
    return req.SerializeToString()


CASES: dict[str, tuple[dict[str, Any], Callable[[], bytes]]] = {
    "traces": (TRACES_JSON, traces_twin),
    "logs": (LOGS_JSON, logs_twin),
    "metrics": (METRICS_JSON, metrics_twin),
}
_RX_KEY = {"traces": "resourceSpans", "logs": "resourceLogs", "metrics": "resourceMetrics"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway() as gw:
        yield gw


def post(gw: GatewayProcess, signal: str, body: bytes, ctype: str, cid: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
    try:
        conn.request("POST", f"/v1/{signal}", body=body,
                     headers={"content-type": ctype, "x-correlation-id": cid})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("signal", list(CASES))
def test_json_lands_equal_to_protobuf_twin(gateway: GatewayProcess, signal: str) -> None:
    doc, twin = CASES[signal]
    cid = f"twin-{signal}-{uuid.uuid4().hex[:8]}"
    status, ctype, body = post(gateway, signal, json.dumps(doc).encode(), "application/json", cid)
    assert (status, ctype, body) == (200, "application/json", b"{}")
    status, ctype, body = post(gateway, signal, twin(), "application/x-protobuf", cid)
    assert (status, ctype, body) == (200, "application/x-protobuf", b"")

    def lines() -> list[dict[str, Any]]:
        found = [ln for ln in gateway.read_sink("default", signal)
                 if any(resource_attrs(rx["resource"]).get("correlation.id") == cid
                        for rx in ln[_RX_KEY[signal]])]
        return found if len(found) >= 2 else []

    from_json, from_proto = wait_for(lines, within=15, what=f"both {signal} requests in the file sink")
    assert from_json == from_proto
    # and they say what the hand-written JSON said, plus the gateway's two attributes
    expected = json.loads(json.dumps(doc))
    for rx in expected[_RX_KEY[signal]]:
        rx["resource"]["attributes"] += [{"key": "tenant.id", "value": {"stringValue": "default"}},
                                         {"key": "correlation.id", "value": {"stringValue": cid}}]
    assert _normalise(from_json) == _normalise(expected)


def _normalise(doc: Any) -> Any:
    """Proto3 JSON output drops defaults and may write int64 as strings: compare values only."""
    if isinstance(doc, dict):
        return {k: _normalise(v) for k, v in doc.items() if v not in (0, "0", False, "", [], {})}
    if isinstance(doc, list):
        return [_normalise(v) for v in doc]
    if isinstance(doc, int) and not isinstance(doc, bool):
        return str(doc)
    return doc
