"""Every Content-Encoding through a real gateway: SDK spans compressed by the real encoders land in
the file sink, over OTLP/HTTP protobuf and JSON (and gRPC deflate); and a small body inflating
past ``server.max_decompressed_bytes`` is refused 413 / RESOURCE_EXHAUSTED within a second or
two, with the gateway's memory held near the cap, while the gateway keeps serving.

The gateway runs with the inflation ratio cap off, so every bomb is stopped by the size cap
itself: the longest decode a bomb can force (the ratio cap is in the unit tests).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import cramjam
import grpc
import pytest
from google.rpc import status_pb2

from otlp import json_mapping
from otlp.signals import Signal
from tests.gateway_process import GatewayProcess, running_gateway, sink_items
from tests.otlp_mutate import process_tree_rss_kib
from tests.sdk_otlp import spans_payload
from tests.waiting import wait_for

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = pytest.mark.e2e

CAP = 32 * 1024 * 1024  # the default server.max_decompressed_bytes
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_GROWTH_MIB = 120  # the process tree's RSS over its level before the bombs
MAX_TREE_HWM_MIB = 400  # as tests/e2e/test_poison_inputs.py


def _zstd(data: bytes) -> bytes:
    return bytes(cramjam.zstd.compress(data))


def _snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _snappy_framed(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress(data))


# (Content-Encoding, encoder) as a client library writes it.
ENCODED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "zstd": ("zstd", _zstd),
    "deflate": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", lambda d: zlib.compress(d, wbits=-15)),
    "zlib": ("zlib", zlib.compress),
    "snappy": ("snappy", _snappy),
    "snappy-framed": ("snappy", _snappy_framed),
    "x-snappy-framed": ("x-snappy-framed", _snappy_framed),
}


def _zeros_streamed(compress: Callable[[bytes], bytes], flush: Callable[[], bytes], total: int) -> bytes:
    chunk = b"\0" * (1 << 20)
    return b"".join(compress(chunk) for _ in range(total >> 20)) + flush()


def zstd_bomb() -> bytes:
    """1 GiB of zeros in one frame that does not state its size: ~32 KiB."""
    comp = zstd.ZstdCompressor()
    return _zeros_streamed(comp.compress, lambda: comp.flush(zstd.ZstdCompressor.FLUSH_FRAME), 1 << 30)


def deflate_bomb() -> bytes:
    """256 MiB of zeros, zlib format: ~256 KiB."""
    comp = zlib.compressobj(9)
    return _zeros_streamed(comp.compress, comp.flush, 256 << 20)


def snappy_block_bomb() -> bytes:
    """A block stating 4 GiB - 1 of output, then a real block's tail: 5 bytes of header decide."""
    return b"\xff\xff\xff\xff\x0f" + _snappy(b"\0" * (1 << 20))[3:]


def snappy_framed_bomb() -> bytes:
    """Framed chunks of 64 KiB of zeros each, 160 MiB of them: ~7.5 MiB, under the 8 MiB body cap."""
    one = _snappy_framed(b"\0" * 65536)
    return one + one[10:] * (160 * 16 - 1)


BOMBS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "zstd": ("zstd", zstd_bomb),
    "deflate": ("deflate", deflate_bomb),
    "snappy-block": ("snappy", snappy_block_bomb),
    "snappy-framed": ("snappy", snappy_framed_bomb),
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway({"TG_SERVER__MAX_DECOMPRESSION_RATIO": "0", "TG_BATCH__MAX_AGE_MS": "5"}) as gw:
        yield gw


def post(gw: GatewayProcess, body: bytes, ctype: str, encoding: str) -> tuple[int, str, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=30)
    try:
        started = time.monotonic()
        conn.request("POST", "/v1/traces", body=body,
                     headers={"content-type": ctype, "content-encoding": encoding})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("content-type") or "", data, time.monotonic() - started
    finally:
        conn.close()


def landed_trace_ids(gw: GatewayProcess) -> set[str]:
    return {item["traceId"] for _attrs, item in sink_items(gw.read_sink("default", "traces"), "traces")}


def wait_landed(gw: GatewayProcess, trace_ids: list[str], what: str) -> None:
    wait_for(lambda: set(trace_ids) <= landed_trace_ids(gw), within=15, what=f"{what} in the file sink")


@pytest.mark.parametrize("ctype", ["application/x-protobuf", "application/json"])
@pytest.mark.parametrize("case", list(ENCODED))
def test_compressed_sdk_spans_land(gateway: GatewayProcess, case: str, ctype: str) -> None:
    encoding, encode = ENCODED[case]
    pb, trace_ids = spans_payload("default", traces=3, children=2)
    body = json_mapping.proto_to_json(Signal.TRACES, pb) if ctype == "application/json" else pb
    status, rtype, answer, _took = post(gateway, encode(body), ctype, encoding)
    assert (status, rtype) == (200, ctype), answer
    assert answer in (b"", b"{}")  # no partial success
    wait_landed(gateway, trace_ids, f"{case} {ctype} spans")


def test_grpc_deflate_spans_land(gateway: GatewayProcess) -> None:
    pb, trace_ids = spans_payload("default", traces=3, children=2)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        channel.unary_unary(TRACE_EXPORT)(pb, timeout=10, compression=grpc.Compression.Deflate)
    wait_landed(gateway, trace_ids, "gRPC deflate spans")


class RssPeak:
    """Samples the gateway process tree's VmRSS every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss_kib(self._pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_bombs_are_refused_fast_with_memory_near_the_cap(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    bombs = {case: (encoding, make()) for case, (encoding, make) in BOMBS.items()}
    grpc_bomb = b"\0" * (64 << 20)  # the gRPC client deflates it itself: ~64 KiB on the wire
    # Warm both transports (and every decoder) first, so the baseline holds what serving costs.
    for case, (encoding, encode) in ENCODED.items():
        pb, _ids = spans_payload("default", traces=1, children=1)
        assert post(gateway, encode(pb), "application/x-protobuf", encoding)[0] == 200, case
    baseline = process_tree_rss_kib(gateway.proc.pid)
    before = gateway.metric("gateway_refused_requests_total", reason="too_large")
    with RssPeak(gateway.proc.pid) as rss:
        for case, (encoding, bomb) in bombs.items():
            for ctype in ("application/x-protobuf", "application/json"):
                status, rtype, answer, took = post(gateway, bomb, ctype, encoding)
                assert (status, rtype) == (413, ctype), (case, answer[:200])
                message = (json.loads(answer)["message"] if ctype == "application/json"
                           else status_pb2.Status.FromString(answer).message)
                assert f"exceeds {CAP} bytes" in message, (case, message)
                print(f"{case:14} {len(bomb):>9} B {ctype:24} refused in {took * 1e3:6.1f} ms")
                assert took < 2.0, f"{case}: {len(bomb)} B refused after {took:.1f}s"
        started = time.monotonic()
        with grpc.insecure_channel(gateway.grpc_target) as channel, pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(TRACE_EXPORT)(grpc_bomb, timeout=30, compression=grpc.Compression.Deflate)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
        took = time.monotonic() - started
        print(f"gRPC deflate of 64 MiB refused in {took * 1e3:.1f} ms (client included)")
    hwm = process_tree_rss_kib(gateway.proc.pid, "VmHWM")
    print(f"tree RSS before {baseline // 1024} MiB, peak {rss.peak // 1024} MiB; VmHWM sum {hwm // 1024} MiB")
    assert rss.peak > 0, "the sampler never read the gateway's memory"
    assert rss.peak - baseline < MAX_GROWTH_MIB * 1024, f"RSS grew {(rss.peak - baseline) // 1024} MiB"
    assert hwm < MAX_TREE_HWM_MIB * 1024, f"the process tree's VmHWM sum to {hwm // 1024} MiB"
    assert gateway.metric("gateway_refused_requests_total", reason="too_large") == before + 2 * len(bombs) + 1
    # and it still serves, every encoding
    pb, trace_ids = spans_payload("default", traces=1, children=1)
    assert post(gateway, _zstd(pb), "application/x-protobuf", "zstd")[0] == 200
    wait_landed(gateway, trace_ids, "spans sent after the bombs")
