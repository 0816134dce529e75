"""The Prometheus from ``stack/`` takes remote write (snappy-compressed protobuf
``WriteRequest``, the protocol the sink speaks) and answers PromQL over what it received."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import cramjam
import pytest

from protos import remote_pb2
from tests import stackenv
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _get(path: str) -> Any:
    with urllib.request.urlopen(f"{stackenv.PROMETHEUS_URL}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def test_buildinfo_says_remote_write_receiver_is_there() -> None:
    stackenv.require("prometheus")
    flags = _get("/api/v1/status/flags")["data"]
    assert flags["web.enable-remote-write-receiver"] == "true"
    assert "native-histograms" in flags["enable-feature"]
    assert "exemplar-storage" in flags["enable-feature"]
    assert _get("/api/v1/status/buildinfo")["status"] == "success"


def test_remote_write_then_promql_reads_it_back() -> None:
    stackenv.require("prometheus")
    run = uuid.uuid4().hex[:12]
    now_ms = int(time.time() * 1000)
    req = remote_pb2.WriteRequest()
    for tenant, value in (("a", 1.5), ("b", 42.0)):
        ts = req.timeseries.add()
        for name, val in sorted({"__name__": "stack_check_total", "run": run, "tenant_id": tenant}.items()):
            ts.labels.add(name=name, value=val)
        ts.samples.add(value=value, timestamp=now_ms)
    body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
    post = urllib.request.Request(
        f"{stackenv.PROMETHEUS_URL}/api/v1/write", data=body, method="POST",
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"},
    )
    with urllib.request.urlopen(post, timeout=10) as resp:
        assert resp.status == 204

    query = urllib.parse.urlencode({"query": f'stack_check_total{{run="{run}"}}', "time": now_ms / 1000})

    def both_series() -> dict[str, str] | None:
        result = _get(f"/api/v1/query?{query}")["data"]["result"]
        return {r["metric"]["tenant_id"]: r["value"][1] for r in result} if len(result) == 2 else None

    assert wait_for(both_series, within=15, what="remote-written series in PromQL") == {"a": "1.5", "b": "42"}
