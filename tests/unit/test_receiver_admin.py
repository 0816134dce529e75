"""Admin endpoints: what load balancers and Prometheus see."""

from __future__ import annotations

from gateway.admin import Admin
from gateway.receivers.httpserver import Request


async def test_readyz_reports_the_reason() -> None:
    state = {"ready": (False, "kafka: cannot connect to 127.0.0.1:9092")}
    admin = Admin(lambda: state["ready"])
    resp = await admin(Request("GET", "/readyz", {}, b""))
    assert resp.status == 503 and b"kafka: cannot connect" in resp.body
    state["ready"] = (True, "kafka")
    assert (await admin(Request("GET", "/readyz", {}, b""))).status == 200


async def test_healthz_metrics_and_others() -> None:
    admin = Admin(lambda: (False, "starting"))
    assert (await admin(Request("GET", "/healthz", {}, b""))).status == 200  # alive even if not ready
    metrics = await admin(Request("GET", "/metrics", {}, b""))
    assert metrics.status == 200 and metrics.content_type.startswith("text/plain")
    for name in (b"gateway_received_items", b"gateway_refused_requests", b"gateway_request_seconds"):
        assert b"# TYPE " + name in metrics.body
    assert (await admin(Request("GET", "/nope", {}, b""))).status == 404
    assert (await admin(Request("POST", "/metrics", {}, b""))).status == 405
