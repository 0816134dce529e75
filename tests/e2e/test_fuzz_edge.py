"""Bounded, deterministic fuzzing of the edge with structure-aware mutants of real requests.

Seeds are valid Export requests from the OpenTelemetry SDK's own encoders (spans with events
and links, logs with a map body, every metric kind including histograms and exponential
histograms) and from the bench builders (several ResourceX per request, summaries), pinned to
fixed ids and times so every run sends the same bytes. ``tests.otlp_mutate.Mutator`` derives
``FUZZ_COUNT`` mutants per signal (mutant i from ``random.Random(SEED * 1_000_003 + i)``), sent
alternately over OTLP/HTTP protobuf and OTLP/gRPC, plus ``FUZZ_COUNT // 10`` per signal of
mutated OTLP/JSON. Each request has its own ``x-correlation-id``, which the gateway stamps on
every ResourceX, so after a clean shutdown the file sink tells what of each request landed.

For every request: no 5xx (503 aside) and no gRPC INTERNAL/UNKNOWN; what the oracle
(``tests.otlp_mutate.expect``) calls valid lands exactly once and nothing else does; a request
with nothing valid is refused (400 / INVALID_ARGUMENT); a partial success names the rejected
items; a refusal lands nothing. OTLP/JSON is checked without an oracle: accepted items (items
in the document minus the rejected count) land exactly once, a refusal lands nothing.

Failures name the mutant index and mutation, show the hex of the first bodies and save all
failing bodies to a temporary directory named in the message. ``TG_FUZZ_COUNT`` overrides the
count (e.g. 100 for a quick run, 20000 for a long one).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otlp.json_mapping import proto_to_json
from otlp.signals import Signal
from tests.gateway_process import GatewayProcess, running_gateway
from tests.otlp_mutate import (
    REQUEST_DESC,
    Answer,
    Client,
    Expectation,
    Mutator,
    encode,
    expect,
    json_items,
    mutate_json,
    parse,
    sink_counts,
    walk,
)
from tests.otlp_payloads import payload
from tests.sdk_otlp import client_resource, finished_logs, finished_spans, metrics_data

pytestmark = pytest.mark.e2e

SEED = 20261130
FUZZ_COUNT = int(os.environ.get("TG_FUZZ_COUNT", "3000"))  # protobuf mutants per signal
JSON_COUNT = max(1, FUZZ_COUNT // 10)  # OTLP/JSON mutants per signal
SENDERS = 4  # requests in flight
BASE_NS = 1_700_000_000_000_000_000
SHOW = 8  # failing bodies shown in hex, one per kind of problem
_TIME_FIELDS = frozenset(("time_unix_nano", "start_time_unix_nano", "end_time_unix_nano",
                          "observed_time_unix_nano"))
_ID_FIELDS = frozenset(("trace_id", "span_id", "parent_span_id"))


# --- seeds ---------------------------------------------------------------------------------


def pinned(signal: Signal, body: bytes) -> bytes:
    """``body`` with every timestamp and id replaced by a fixed value (ids derived from their
    old value, so spans of one trace stay together), for bytes that are the same every run."""
    tree = parse(body, REQUEST_DESC[signal])
    for _parent, _i, node in walk(tree):
        name = node.fdesc.name if node.fdesc is not None else ""
        if name in _TIME_FIELDS and node.wt == 1:
            node.raw = BASE_NS.to_bytes(8, "little")
        elif name in _ID_FIELDS and node.wt == 2 and node.raw:
            node.raw = hashlib.sha256(b"%d" % SEED + node.raw).digest()[:len(node.raw)]
    return encode(tree)


def sdk_seeds() -> dict[Signal, bytes]:
    state = random.getstate()
    random.seed(SEED)  # the SDK's id generator draws from the random module
    try:
        res = client_resource("fuzz")
        out = {
            Signal.TRACES: encode_spans(finished_spans(res, traces=2, children=2)[0]).SerializeToString(),
            Signal.LOGS: encode_logs(finished_logs(res, 3)).SerializeToString(),
            Signal.METRICS: encode_metrics(metrics_data(res)).SerializeToString(),
        }
    finally:
        random.setstate(state)
    return {s: pinned(s, b) for s, b in out.items()}


def seeds() -> dict[Signal, list[bytes]]:
    """Per signal: the SDK request, a bench request of 3 ResourceX, and both together."""
    sdk = sdk_seeds()
    bench = {Signal.TRACES: payload(Signal.TRACES, spans_per_request=2, attributes=3, resources=3),
             Signal.LOGS: payload(Signal.LOGS, records=2, attributes=3, resources=3),
             Signal.METRICS: payload(Signal.METRICS, points=1, resources=3)}
    return {s: [sdk[s], bench[s], sdk[s] + bench[s]] for s in Signal}


# --- mutants -------------------------------------------------------------------------------


@dataclass
class Shot:
    """One request of the run and what became of it."""

    index: int
    signal: Signal
    transport: str
    mutation: str
    body: bytes
    cid: str
    expectation: Expectation | None = None  # protobuf: the oracle's verdict
    json_total: int | None = None  # OTLP/JSON: items in the document, when it has the shape
    answer: Answer | None = None
    problems: list[str] = field(default_factory=list)


def mutant(signal: Signal, index: int, seed_bodies: list[bytes]) -> Shot:
    """Mutant ``index`` of ``signal``: the same bytes for the same (SEED, index) every run."""
    rng = random.Random(SEED * 1_000_003 + index)
    seed_body = rng.choice(seed_bodies)
    cid = f"fz-{signal.value[0]}{index:06d}"
    if index >= FUZZ_COUNT:  # the OTLP/JSON share
        doc = json.loads(proto_to_json(signal, seed_body))
        doc, name = mutate_json(rng, doc)
        body = json.dumps(doc).encode()
        return Shot(index, signal, "http-json", name, body, cid, json_total=json_items(signal, doc))
    body, name = Mutator(rng).mutate(signal, seed_body)
    transport = "http-pb" if index % 2 == 0 else "grpc"
    return Shot(index, signal, transport, name, body, cid, expectation=expect(signal, body))


def all_shots() -> list[Shot]:
    seed_bodies = seeds()
    return [mutant(s, i, seed_bodies[s]) for s in Signal for i in range(FUZZ_COUNT + JSON_COUNT)]


# --- the run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway({"TG_BATCH__MAX_AGE_MS": "2"}) as gw:
        yield gw


def fire(gw: GatewayProcess, shots: list[Shot]) -> None:
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def send(shot: Shot) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client("127.0.0.1", gw.http_port, gw.grpc_target)
            with lock:
                clients.append(client)
        try:
            shot.answer = client.send(shot.signal, shot.transport, shot.body, {"x-correlation-id": shot.cid})
        except Exception as exc:  # a dropped connection is a finding, not a crash of the test
            shot.problems.append(f"no answer: {type(exc).__name__}: {exc}")

    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(send, shots))
    finally:
        for c in clients:
            c.close()


def rule(error: str) -> str:
    """The rule an oracle error names, without its field path: 'not UTF-8', 'wire type 1, ...'."""
    last = error.rsplit(".", 1)[-1] if ": " not in error.rsplit(".", 1)[-1] else error.rsplit(": ", 1)[-1]
    return last.split(",")[0].split(" does not fit")[0][:40] if "fit" not in last else "out of range"


def judge(shot: Shot, landed: int) -> None:
    """Append to ``shot.problems`` every way its answer or the sink broke the rules, each as
    '<kind>: <details>'."""
    a = shot.answer
    if a is None:
        return
    problem = shot.problems.append
    if a.server_fault:
        problem(f"server fault: {a}")
    if not a.ok:
        if landed:
            problem(f"refused, yet items landed: {landed} landed after {a}")
        exp = shot.expectation
        if exp is not None and not exp.any_invalid and exp.envelope_error is None and a.http_status != 503:
            problem(f"valid request refused: {a}")
        return
    if shot.expectation is None:  # OTLP/JSON: accepted = items in the document - rejected
        if shot.json_total is not None and landed != shot.json_total - a.rejected:
            problem(f"json: landed != items - rejected: {shot.json_total} - {a.rejected} != {landed} landed")
        return
    exp = shot.expectation
    why = exp.first_error()
    rules = ", ".join(sorted({rule(e) for e in exp.errors()}))
    if exp.must_refuse():
        problem(f"nothing valid but not refused ({rules}): {why}; answered {a}; {landed} landed")
        return
    if landed > exp.accepted_items:
        problem(f"invalid part landed ({rules}): {exp.accepted_items} valid item(s), {landed} landed; "
                f"{why}; answer {a}")
    elif landed < exp.accepted_items:
        problem(f"valid items lost: {exp.accepted_items} valid item(s), {landed} landed; "
                f"oracle: {why or 'all valid'}; answer {a}")
    if exp.any_invalid:
        choices = exp.rejected_choices()
        counted = landed == exp.accepted_items and choices is not None and any(choices)
        if counted and choices is not None and a.rejected not in choices:
            problem(f"wrong rejected count ({rules}): {a.rejected}, expected {sorted(choices)} ({why})")
        if a.rejected and not a.message:
            problem(f"partial success without a message: {a}")
    elif a.rejected:
        problem(f"valid part rejected: {a}")


def outcome(shot: Shot) -> str:
    a = shot.answer
    if a is None:
        return "no answer"
    if a.ok:
        return "partial" if a.rejected else "ok"
    return f"refused {a.http_status if a.http_status is not None else a.grpc_code}"


def report(shots: list[Shot], failing: list[Shot]) -> str:
    per = Counter(f"{s.signal.value:7} {s.transport:9} {outcome(s)}" for s in shots)
    lines = [f"fuzz: seed {SEED}, {FUZZ_COUNT} protobuf + {JSON_COUNT} JSON mutants per signal"]
    lines += [f"  {n:6d}  {k}" for k, n in sorted(per.items())]
    if failing:
        kinds = Counter(p.split(":")[0] for s in failing for p in s.problems)
        lines.append(f"{len(failing)} failing request(s); problems by kind:")
        lines += [f"  {n:6d}  {k}" for k, n in kinds.most_common(25)]
    return "\n".join(lines)


def save(failing: list[Shot]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="tg-fuzz-failures-"))
    for s in failing:
        ext = "json" if s.transport == "http-json" else "bin"
        (out / f"{s.signal.value}-{s.index:06d}-{s.transport}.{ext}").write_bytes(s.body)
    (out / "problems.txt").write_text("\n".join(
        f"{s.signal.value} #{s.index} {s.transport} {s.mutation}: {'; '.join(s.problems)}" for s in failing))
    return out


def test_fuzz_edge(gateway: GatewayProcess) -> None:
    shots = all_shots()
    fire(gateway, shots)
    assert gateway.proc is not None and gateway.proc.poll() is None, f"the gateway died:\n{gateway.log()}"
    assert gateway.readyz()[0] == 200, gateway.readyz()
    rc = gateway.stop()  # flushes every batch and the file sink
    assert rc == 0, f"gateway exited {rc} after SIGTERM:\n{gateway.log()}"
    landed: dict[str, int] = {}
    for signal in Signal:
        lines = gateway.read_sink("default", signal.value)
        for cid, n in sink_counts(lines, signal, "correlation.id").items():
            landed[cid] = landed.get(cid, 0) + n
    for shot in shots:
        judge(shot, landed.get(shot.cid, 0))
    failing = [s for s in shots if s.problems]
    summary = report(shots, failing)
    print(summary)
    if failing:
        where = save(failing)
        examples: dict[str, Shot] = {}  # the first failing request of each kind of problem
        for s in failing:
            for p in s.problems:
                examples.setdefault(p.split(":")[0], s)
        shown = "\n".join(
            f"- {kind}: {s.signal.value} mutant #{s.index} ({s.mutation}, {s.transport}): "
            f"{'; '.join(s.problems)[:400]}\n"
            f"  body ({len(s.body)} bytes): {s.body[:600].hex()}{'...' if len(s.body) > 600 else ''}"
            for kind, s in list(examples.items())[:SHOW])
        pytest.fail(f"{summary}\na failure of each kind (regenerate with mutant(signal, index, "
                    f"seeds()[signal]) at SEED={SEED}):\n{shown}\n"
                    f"all {len(failing)} failing bodies and their problems: {where}",
                    pytrace=False)
