"""Poison inputs at the edge: content the gateway must refuse, and what must still get through.

Each input goes over OTLP/HTTP protobuf, OTLP/HTTP JSON (where JSON can say it) and OTLP/gRPC
(raw bytes), to a real gateway (embedded default: memory bus -> file sink), twice: alone, where
the answer is 400 / INVALID_ARGUMENT, and after a bad ResourceX beside a good one, where the
answer is a partial success naming the rejected items and only the good ResourceX lands, once.
Every check ends with a good request of the same tenant (which must land after the bad one, so
nothing of the bad part can still be on its way) and one of another tenant, and /readyz 200.

The content rules come from ``tests.otlp_mutate``: varints at most 10 bytes and below 2^64,
each known field in its own wire type, 32-bit fields holding 32-bit values, strings UTF-8
(in JSON: no raw bytes that are not UTF-8, no \\ud800 escape without its pair),
AnyValue nesting at most 16 arrays/kvlists (16 lands, 17 is refused). Request size: a body
that inflates within ``server.max_decompressed_bytes`` but holds more than
``server.max_items_per_request`` items is refused as too large (413, gRPC RESOURCE_EXHAUSTED or
INVALID_ARGUMENT, never with a retry hint), quickly and without the memory to decode it.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp.json_mapping import proto_to_json
from otlp.signals import Signal
from tests.gateway_process import GatewayProcess, running_gateway
from tests.otlp_mutate import (
    MAX_ANY_DEPTH,
    TRANSPORTS,
    Answer,
    Client,
    fixed64_field,
    key_value,
    len_field,
    nested_any,
    over_64_bits,
    process_tree_rss_kib,
    sink_counts,
    string_any,
    tag,
    varint,
    varint_field,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

BASE_NS = 1_700_000_000_000_000_000
GOOD_ITEMS = 2
ITEM_LIMIT = 1000  # server.max_items_per_request for the item-limit checks
DEFAULT_ITEM_LIMIT = 100_000  # its documented default
MAX_TREE_RSS_MIB = 400
ENV = {"TG_AUTH__TRUST_TENANT_HEADER": "true", "TG_BATCH__MAX_AGE_MS": "5"}
_RX_JSON_KEY = {Signal.TRACES: "resourceSpans", Signal.LOGS: "resourceLogs",
                Signal.METRICS: "resourceMetrics"}


# --- building requests ---------------------------------------------------------------------


def service_resource(service: str) -> bytes:
    """A Resource body with ``service.name``."""
    res = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return res.SerializeToString()


def rx(service: str, items: list[bytes]) -> bytes:
    """A ResourceX body (same shape for all three signals): resource, one ScopeX with ``items``."""
    scope = len_field(1, len_field(1, b"poison-tests")) + b"".join(len_field(2, i) for i in items)
    return len_field(1, service_resource(service)) + len_field(2, scope)


def request(*rxs: bytes) -> bytes:
    return b"".join(len_field(1, r) for r in rxs)


def good_item(signal: Signal, i: int) -> bytes:
    """One valid span / log record / metric of one gauge point, as raw bytes."""
    if signal is Signal.TRACES:
        ids = len_field(1, uuid.uuid4().bytes) + len_field(2, uuid.uuid4().bytes[:8])
        times = fixed64_field(7, BASE_NS) + fixed64_field(8, BASE_NS + 1)
        return ids + len_field(5, f"ok-{i}".encode()) + times
    if signal is Signal.LOGS:
        return fixed64_field(1, BASE_NS) + len_field(5, string_any(f"ok {i}".encode()))
    point = fixed64_field(3, BASE_NS) + fixed64_field(6, i)  # as_int
    return len_field(1, f"ok.{i}".encode()) + len_field(5, len_field(1, point))


def good_rx(signal: Signal, service: str, n: int = GOOD_ITEMS) -> bytes:
    return rx(service, [good_item(signal, i) for i in range(n)])


def rx_json(signal: Signal, body: bytes) -> dict[str, Any]:
    """A valid ResourceX body as OTLP/JSON (trace and span ids in hex, as OTLP/JSON has them)."""
    out: dict[str, Any] = orjson.loads(proto_to_json(signal, request(body)))[_RX_JSON_KEY[signal]][0]
    return out


def json_request(signal: Signal, rxs: list[dict[str, Any]], raw: bool = False) -> bytes:
    """The request as OTLP/JSON; ``raw``: strings holding U+DC80..U+DCFF are written as the bytes
    0x80..0xff they stand for (Python's ``surrogateescape``), to send text that is not UTF-8.
    Otherwise every non-ASCII character is a ``\\uXXXX`` escape, a lone surrogate too."""
    doc = {_RX_JSON_KEY[signal]: rxs}
    if raw:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape")
    return json.dumps(doc).encode()


def nested_json(depth: int, kind: str) -> dict[str, Any]:
    value: dict[str, Any] = {"intValue": "7"}
    for _ in range(depth):
        if kind == "array":
            value = {"arrayValue": {"values": [value]}}
        else:
            value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def log_with_attr(any_body: bytes) -> bytes:
    return fixed64_field(1, BASE_NS) + len_field(6, key_value(b"poison", any_body))


def log_with_body(any_body: bytes) -> bytes:
    return fixed64_field(1, BASE_NS) + len_field(5, any_body)


def json_log(attr: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"timeUnixNano": str(BASE_NS)}
    if attr is not None:
        rec["attributes"] = [{"key": "poison", "value": attr}]
    if body is not None:
        rec["body"] = body
    return rec


def json_rx(signal: Signal, service: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    sx_key, item_key = {Signal.TRACES: ("scopeSpans", "spans"), Signal.LOGS: ("scopeLogs", "logRecords"),
                        Signal.METRICS: ("scopeMetrics", "metrics")}[signal]
    return {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            sx_key: [{"scope": {"name": "poison-tests"}, item_key: items}]}


# --- the poison inputs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """Bad ResourceX parts (bodies with items only of this kind); ``json``: the same as
    OTLP/JSON ResourceX objects, or None where JSON cannot say it; ``json_raw``: written with
    ``json_request(raw=True)`` (bytes that are not UTF-8 in its strings); ``reason``: what a
    partial success must say of it, over every transport and encoding alike."""

    name: str
    signal: Signal
    items: list[list[bytes]]  # per bad ResourceX, its items
    json: list[list[dict[str, Any]]] | None = None
    json_raw: bool = False
    reason: str = ""

    @property
    def bad_items(self) -> int:
        """Items in the bad parts; for metrics every item here is a metric of one data point."""
        return sum(len(items) for items in self.items)


def _span(name: bytes) -> bytes:
    return len_field(1, uuid.uuid4().bytes) + len_field(2, uuid.uuid4().bytes[:8]) + len_field(5, name)


def _json_span(name: str) -> dict[str, Any]:
    return {"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": name}


def _gauge_metric(name: bytes) -> bytes:
    point = fixed64_field(3, BASE_NS) + fixed64_field(6, 1)  # as_int
    return len_field(1, name) + len_field(5, len_field(1, point))


def _json_gauge_metric(name: str) -> dict[str, Any]:
    return {"name": name, "gauge": {"dataPoints": [{"timeUnixNano": str(BASE_NS), "asInt": "1"}]}}


def _exp_histogram_metric(scale: bytes) -> bytes:
    """A Metric with one ExponentialHistogramDataPoint whose ``scale`` (sint32, field 6 in
    opentelemetry-proto) is the varint bytes ``scale``."""
    point = fixed64_field(3, BASE_NS) + fixed64_field(4, 1) + tag(6, 0) + scale
    return len_field(1, b"bad.exp") + len_field(10, len_field(1, point) + varint_field(2, varint(2)))


_DEEP = 100
_NOT_UTF8 = "not valid UTF-8"  # otlp.validate's reason, which OTLP/JSON gives too
POISONS = [
    # a. AnyValue.double_value (field 4, fixed64) as a varint: >= 2^64, and a plain wrong wire type
    Poison("double_as_varint_over_2_64", Signal.LOGS, [[log_with_attr(varint_field(4, over_64_bits()))]]),
    Poison("double_as_varint", Signal.LOGS, [[log_with_attr(varint_field(4, varint(5)))]]),
    # b. AnyValue nesting: 100 levels of arrays (attribute), of kvlists (body); 17 is one too many
    Poison("array_100_deep", Signal.LOGS, [[log_with_attr(nested_any(_DEEP, "array"))]],
           [[json_log(attr=nested_json(_DEEP, "array"))]]),
    Poison("kvlist_100_deep", Signal.LOGS, [[log_with_body(nested_any(_DEEP, "kvlist"))]],
           [[json_log(body=nested_json(_DEEP, "kvlist"))]]),
    Poison("array_17_deep", Signal.LOGS, [[log_with_attr(nested_any(MAX_ANY_DEPTH + 1, "array"))]],
           [[json_log(attr=nested_json(MAX_ANY_DEPTH + 1, "array"))]]),
    Poison("kvlist_17_deep", Signal.LOGS, [[log_with_body(nested_any(MAX_ANY_DEPTH + 1, "kvlist"))]],
           [[json_log(body=nested_json(MAX_ANY_DEPTH + 1, "kvlist"))]]),
    # c. sint32 scale of an exponential histogram point as a 10-byte varint (-1 written as int64)
    Poison("exp_histogram_scale_10_byte_varint", Signal.METRICS, [[_exp_histogram_metric(varint(-1))]],
           [[{"name": "bad.exp", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
               {"timeUnixNano": str(BASE_NS), "count": "1", "scale": 18446744073709551615}]}}]]),
    # d. a deep value in one ResourceLogs beside a malformed one (a LogRecord whose body field
    # runs past its end): both refused, the good one lands
    Poison("deep_beside_malformed", Signal.LOGS,
           [[log_with_attr(nested_any(_DEEP, "array"))], [tag(5, 2) + varint(9) + b"\x0a\x07abc"]],
           [[json_log(attr=nested_json(_DEEP, "array"))], [{"timeUnixNano": "not a number"}]]),
    # e. strings that are not UTF-8: a span name, a log body, an attribute key; in JSON the same
    # bytes raw in the body (U+DCxx in these strings stands for byte 0xxx, see json_request)
    Poison("span_name_not_utf8", Signal.TRACES, [[_span(b"GET /cart\xff\xfe")]],
           [[_json_span("GET /cart\udcff\udcfe")]], json_raw=True, reason=_NOT_UTF8),
    Poison("log_body_not_utf8", Signal.LOGS, [[log_with_body(string_any(b"order \xc3\x28 placed"))]],
           [[json_log(body={"stringValue": "order \udcc3\x28 placed"})]], json_raw=True, reason=_NOT_UTF8),
    Poison("attribute_key_not_utf8", Signal.LOGS,
           [[fixed64_field(1, BASE_NS) + len_field(6, key_value(b"k\xed\xa0\x80", string_any(b"v")))]],
           [[{"timeUnixNano": str(BASE_NS),
              "attributes": [{"key": "k\udced\udca0\udc80", "value": {"stringValue": "v"}}]}]],
           json_raw=True, reason=_NOT_UTF8),
    # f. a lone surrogate: in JSON a \ud800 escape without its pair, in protobuf its UTF-8-like
    # bytes (which UTF-8 forbids); a string value, a metric name
    Poison("span_attribute_lone_surrogate", Signal.TRACES,
           [[_span(b"ok") + len_field(9, key_value(b"user", string_any(b"ann\xed\xa0\x80")))]],
           [[{**_json_span("ok"), "attributes": [{"key": "user", "value": {"stringValue": "ann\ud800"}}]}]],
           reason=_NOT_UTF8),
    Poison("metric_name_lone_surrogate", Signal.METRICS, [[_gauge_metric(b"bad.m\xed\xb0\x80")]],
           [[_json_gauge_metric("bad.m\udc00")]], reason=_NOT_UTF8),
]


# --- the gateway and its checks ------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway(ENV) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[Client]:
    c = Client("127.0.0.1", gateway.http_port, gateway.grpc_target)
    yield c
    c.close()


def tenant_headers(tenant: str) -> dict[str, str]:
    return {"x-scope-orgid": tenant}


def new_tenant(label: str) -> str:
    return f"{label[:40]}-{uuid.uuid4().hex[:8]}".replace("_", "-")


def refused_items(gw: GatewayProcess, signal: Signal) -> dict[str, float]:
    return gw.metric_by("gateway_refused_items_total", "reason", signal=signal.value)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def send_good(client: Client, signal: Signal, transport: str, tenant: str, service: str) -> None:
    body = request(good_rx(signal, service))
    if transport == "http-json":
        body = json_request(signal, [rx_json(signal, good_rx(signal, service))])
    answer = client.send(signal, transport, body, tenant_headers(tenant))
    assert answer.ok and answer.rejected == 0, f"a good request was not taken: {answer}"


def landed(gw: GatewayProcess, tenant: str, signal: Signal) -> dict[str, int]:
    """Items per service.name in the tenant's file."""
    return sink_counts(gw.read_sink(tenant, signal.value), signal, "service.name")


def settle_and_check_others(gw: GatewayProcess, client: Client, signal: Signal, transport: str,
                            tenant: str) -> dict[str, int]:
    """Send the same tenant's sentinel and another tenant's good request; wait until both
    landed; /readyz 200. Returns the tenant's items per service."""
    other = new_tenant("bystander")
    send_good(client, signal, transport, tenant, "sentinel")
    send_good(client, signal, transport, other, "bystander")
    wait_for(lambda: landed(gw, other, signal).get("bystander") == GOOD_ITEMS, within=20,
             what=f"another tenant's {signal.value} in its file")

    def sentinel_landed() -> dict[str, int] | None:
        counts = landed(gw, tenant, signal)
        return counts if counts.get("sentinel") == GOOD_ITEMS else None

    found = wait_for(sentinel_landed, within=20, what=f"the sentinel {signal.value} in {tenant}'s file")
    assert gw.readyz()[0] == 200, gw.readyz()
    return found


def body_for(case: Poison, transport: str, beside_good: bool) -> bytes:
    if transport == "http-json":
        assert case.json is not None
        parts = [json_rx(case.signal, f"bad-{i}", items) for i, items in enumerate(case.json)]
        if beside_good:
            parts.append(rx_json(case.signal, good_rx(case.signal, "good")))
        return json_request(case.signal, parts, raw=case.json_raw)
    bad = [rx(f"bad-{i}", items) for i, items in enumerate(case.items)]
    return request(*bad, *([good_rx(case.signal, "good")] if beside_good else []))


def _cases() -> Iterator[Any]:
    for case in POISONS:
        for transport in TRANSPORTS:
            if transport == "http-json" and case.json is None:
                continue
            for beside in (False, True):
                yield pytest.param(case, transport, beside,
                                   id=f"{case.name}-{transport}-{'beside-good' if beside else 'alone'}")


@pytest.mark.parametrize(("case", "transport", "beside_good"), list(_cases()))
def test_poison_is_refused_and_the_rest_lands(gateway: GatewayProcess, client: Client, case: Poison,
                                              transport: str, beside_good: bool) -> None:
    signal = case.signal
    tenant = new_tenant(case.name)
    items_before = refused_items(gateway, signal)
    answer = client.send(signal, transport, body_for(case, transport, beside_good), tenant_headers(tenant))
    assert not answer.server_fault, f"server fault for {case.name}: {answer}"
    if beside_good:
        assert answer.ok, f"{case.name} beside a good part must be a partial success, got {answer}"
        assert answer.rejected == case.bad_items, f"rejected count: {answer}"
        assert answer.message, f"a partial success names what it rejected: {answer}"
        assert case.reason in answer.message, f"the reason is {case.reason!r}: {answer}"
    else:
        assert answer.invalid_argument, f"{case.name} alone must be 400 / INVALID_ARGUMENT, got {answer}"
        assert not answer.retry_hint, f"a malformed request must not be retried: {answer}"
        assert answer.message, answer
    found = settle_and_check_others(gateway, client, signal, transport, tenant)
    assert found.get("good", 0) == (GOOD_ITEMS if beside_good else 0), f"good part in the sink: {found}"
    assert not {s for s in found if s.startswith("bad")}, f"the bad part landed: {found}"
    refused = delta(refused_items(gateway, signal), items_before)
    assert sum(refused.values()) == case.bad_items and set(refused) <= {"malformed", "invalid"}, \
        f"gateway_refused_items_total{{signal={signal.value}}} moved by {refused}, not {case.bad_items}"


def _depth(value: dict[str, Any]) -> int:
    """Arrays/kvlists nested in an OTLP/JSON AnyValue (one path: our values have one child)."""
    if "arrayValue" in value:
        return 1 + _depth(value["arrayValue"]["values"][0])
    if "kvlistValue" in value:
        return 1 + _depth(value["kvlistValue"]["values"][0]["value"])
    return 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nesting_at_the_limit_lands(gateway: GatewayProcess, client: Client, transport: str) -> None:
    """16 arrays in an attribute and 16 kvlists in a body are accepted, land once, keep their depth."""
    tenant = new_tenant("deep16")
    if transport == "http-json":
        body = json_request(Signal.LOGS, [json_rx(Signal.LOGS, "limit", [
            json_log(attr=nested_json(MAX_ANY_DEPTH, "array"), body=nested_json(MAX_ANY_DEPTH, "kvlist"))])])
    else:
        record = (fixed64_field(1, BASE_NS) + len_field(5, nested_any(MAX_ANY_DEPTH, "kvlist"))
                  + len_field(6, key_value(b"poison", nested_any(MAX_ANY_DEPTH, "array"))))
        body = request(rx("limit", [record]))
    answer = client.send(Signal.LOGS, transport, body, tenant_headers(tenant))
    assert answer.ok and answer.rejected == 0, f"{MAX_ANY_DEPTH} levels are within the limit: {answer}"
    settle_and_check_others(gateway, client, Signal.LOGS, transport, tenant)
    records = [rec for line in gateway.read_sink(tenant, "logs") for rl in line["resourceLogs"]
               if any(kv["value"].get("stringValue") == "limit" for kv in rl["resource"]["attributes"])
               for sl in rl["scopeLogs"] for rec in sl["logRecords"]]
    assert len(records) == 1, records
    assert _depth(records[0]["attributes"][0]["value"]) == MAX_ANY_DEPTH
    assert _depth(records[0]["body"]) == MAX_ANY_DEPTH


# --- too many items ------------------------------------------------------------------------


def many_logs_request(n: int) -> bytes:
    """One ResourceLogs of ``n`` tiny log records (a body of 1 byte each)."""
    return request(rx("many", [log_with_body(string_any(b"x"))] * n))


def many_logs_json(n: int) -> bytes:
    return json_request(Signal.LOGS, [json_rx(Signal.LOGS, "many", [{"body": {"stringValue": "x"}}] * n)])


@pytest.fixture(scope="module")
def limited_gateway() -> Iterator[GatewayProcess]:
    with running_gateway({**ENV, "TG_SERVER__MAX_ITEMS_PER_REQUEST": str(ITEM_LIMIT)}) as gw:
        yield gw


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_too_many_items_is_refused(limited_gateway: GatewayProcess, transport: str) -> None:
    gw = limited_gateway
    client = Client("127.0.0.1", gw.http_port, gw.grpc_target)
    try:
        tenant = new_tenant("many")
        build = many_logs_json if transport == "http-json" else many_logs_request
        before = gw.metric("gateway_refused_requests_total", reason="too_large", signal="logs")
        items_before = gw.metric("gateway_refused_items_total", reason="too_large", signal="logs")
        over = client.send(Signal.LOGS, transport, build(ITEM_LIMIT + 1), tenant_headers(tenant))
        assert over.too_large, f"{ITEM_LIMIT + 1} items over a limit of {ITEM_LIMIT}: {over}"
        assert str(ITEM_LIMIT) in over.message, f"the refusal names the limit: {over}"
        assert gw.metric("gateway_refused_requests_total", reason="too_large", signal="logs") == before + 1
        items_after = gw.metric("gateway_refused_items_total", reason="too_large", signal="logs")
        assert items_after >= items_before + ITEM_LIMIT + 1, (items_before, items_after)
        at = client.send(Signal.LOGS, transport, build(ITEM_LIMIT), tenant_headers(tenant))
        assert at.ok and at.rejected == 0, f"{ITEM_LIMIT} items is within the limit: {at}"
        wait_for(lambda: landed(gw, tenant, Signal.LOGS).get("many") == ITEM_LIMIT, within=20,
                 what=f"the {ITEM_LIMIT} records in the file")
        assert gw.readyz()[0] == 200
    finally:
        client.close()


# --- a small body of 16.7 million empty spans ------------------------------------------------

INFLATED = 32 * 1024 * 1024  # the default server.max_decompressed_bytes


def empty_spans_request(size: int) -> bytes:
    """An ExportTraceServiceRequest of at most ``size`` bytes: one ResourceSpans, one
    ScopeSpans, as many empty spans (2 bytes each) as fit."""
    n = (size - 16) // 2
    rs = len_field(2, b"\x12\x00" * n)  # ResourceSpans.scope_spans: ScopeSpans of n empty spans
    out = len_field(1, rs)
    assert len(out) <= size
    return out


@pytest.fixture(scope="module")
def default_gateway() -> Iterator[GatewayProcess]:
    with running_gateway(ENV) as gw:
        yield gw


def send_in_background(gw: GatewayProcess, transport: str,
                       body: bytes) -> tuple[threading.Thread, list[Answer]]:
    """Send gzipped ``body`` as tenant ``bomber`` from a thread; the answer lands in the list."""
    answers: list[Answer] = []

    def run() -> None:
        client = Client("127.0.0.1", gw.http_port, gw.grpc_target)
        try:
            answer = client.send(Signal.TRACES, transport, body, tenant_headers("bomber"), gzip_it=True)
            answers.append(answer)
        finally:
            client.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, answers


def test_small_body_of_millions_of_empty_spans(default_gateway: GatewayProcess) -> None:
    gw = default_gateway
    assert gw.proc is not None
    client = Client("127.0.0.1", gw.http_port, gw.grpc_target)
    try:
        # Guard: where the item limit is missing, the bomb would be accepted and its 16.7 M spans
        # converted by the file sink (gigabytes): probe the documented default first.
        probe = client.send(Signal.TRACES, "http-pb", empty_spans_request(2 * DEFAULT_ITEM_LIMIT + 64),
                            tenant_headers(new_tenant("probe")))
        if not probe.too_large:
            pytest.fail(f"{DEFAULT_ITEM_LIMIT + 1}+ empty spans were not refused ({probe}): the gateway has "
                        f"no default item limit of {DEFAULT_ITEM_LIMIT}; not sending the 16.7 M-span body")
        raw = empty_spans_request(INFLATED)
        bomb = zlib.compress(raw, 9, wbits=31)
        assert len(bomb) < 64 * 1024, len(bomb)
        assert gzip.decompress(bomb)[:64] == raw[:64]
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            assert gw.proc is not None
            while not stop.is_set():
                peak[0] = max(peak[0], process_tree_rss_kib(gw.proc.pid))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for transport in ("http-pb", "grpc"):
                # gRPC: the client compresses the 32 MiB message itself.
                t, answers = send_in_background(gw, transport, bomb if transport == "http-pb" else raw)
                try:
                    # other tenants are served meanwhile
                    send_good(client, Signal.TRACES, "http-pb", new_tenant("meanwhile"), "meanwhile")
                    send_good(client, Signal.TRACES, "grpc", new_tenant("meanwhile"), "meanwhile")
                finally:
                    t.join(timeout=60)
                assert answers, f"no answer to the {transport} bomb within 60 s"
                answer = answers[0]
                assert answer.too_large, f"{transport}: 16.7 M empty spans are too many items: {answer}"
                assert answer.seconds < 5, f"{transport}: the refusal took {answer.seconds:.1f}s"
        finally:
            stop.set()
            sampler.join()
        hwm = process_tree_rss_kib(gw.proc.pid, "VmHWM")
        assert peak[0] > 0, "the sampler never read the gateway's memory"
        assert peak[0] < MAX_TREE_RSS_MIB * 1024, f"the process tree's RSS peaked at {peak[0] // 1024} MiB"
        assert hwm < MAX_TREE_RSS_MIB * 1024, f"the process tree's VmHWM sum to {hwm // 1024} MiB"
        assert gw.sink_files("bomber", "traces") == []
        settle_and_check_others(gw, client, Signal.TRACES, "http-pb", new_tenant("after-bomb"))
    finally:
        client.close()
