"""Authenticator (every path) and RateLimiter (with a fake clock)."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from gateway.tenancy import Authenticator, AuthError, RateLimiter, valid_tenant
from settings.config import AuthConfig, LimitsConfig, RateLimit

KEYS = {"k-acme-123": "acme", "k-globex-456": "globex"}


def test_disabled_auth_is_default_tenant() -> None:
    auth = Authenticator(AuthConfig())
    assert auth.tenant_for({}) == "default"
    assert auth.tenant_for({"authorization": "Bearer whatever", "x-scope-orgid": "acme"}) == "default"


def test_disabled_auth_with_trusted_header() -> None:
    auth = Authenticator(AuthConfig(trust_tenant_header=True))
    assert auth.tenant_for({"x-scope-orgid": "team-a"}) == "team-a"
    assert auth.tenant_for({}) == "default"
    with pytest.raises(AuthError):
        auth.tenant_for({"x-scope-orgid": "bad tenant/.."})


@pytest.mark.parametrize(("headers", "tenant"), [
    ({"authorization": "Bearer k-acme-123"}, "acme"),
    ({"authorization": "bearer   k-globex-456 "}, "globex"),
    ({"x-api-key": "k-globex-456"}, "globex"),
    ({"authorization": "Basic abc", "x-api-key": "k-acme-123"}, "acme"),
])
def test_enabled_auth_accepts_keys(headers: dict[str, str], tenant: str) -> None:
    assert Authenticator(AuthConfig(enabled=True, api_keys=KEYS)).tenant_for(headers) == tenant


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "missing credentials"),
    ({"authorization": "Bearer "}, "missing credentials"),
    ({"authorization": "Bearer k-acme-12"}, "invalid API key"),
    ({"x-api-key": "k-acme-1234"}, "invalid API key"),
    ({"x-scope-orgid": "acme"}, "missing credentials"),  # header not trusted
])
def test_enabled_auth_refuses(headers: dict[str, str], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        Authenticator(AuthConfig(enabled=True, api_keys=KEYS)).tenant_for(headers)


def test_enabled_auth_with_trusted_header_still_needs_a_key() -> None:
    auth = Authenticator(AuthConfig(enabled=True, api_keys=KEYS, trust_tenant_header=True,
                                    delegated_tenants={"acme": ["team-a", "team-b"]}))
    with pytest.raises(AuthError, match="missing credentials"):
        auth.tenant_for({"x-scope-orgid": "proxy-set"})  # a header alone chose any tenant before
    with pytest.raises(AuthError, match="invalid API key"):
        auth.tenant_for({"x-scope-orgid": "acme", "x-api-key": "guess"})
    assert auth.tenant_for({"x-api-key": "k-acme-123"}) == "acme"
    assert auth.tenant_for({"x-api-key": "k-acme-123", "x-scope-orgid": "acme"}) == "acme"
    assert auth.tenant_for({"x-api-key": "k-acme-123", "x-scope-orgid": "team-b"}) == "team-b"
    with pytest.raises(AuthError, match="may not send for tenant 'globex'"):
        auth.tenant_for({"x-api-key": "k-acme-123", "x-scope-orgid": "globex"})
    with pytest.raises(AuthError):
        auth.tenant_for({})


def test_a_wildcard_delegation_lets_a_key_name_any_valid_tenant() -> None:
    auth = Authenticator(AuthConfig(enabled=True, api_keys=KEYS, trust_tenant_header=True,
                                    delegated_tenants={"acme": ["*"]}))
    assert auth.tenant_for({"x-api-key": "k-acme-123", "x-scope-orgid": "anyone"}) == "anyone"
    with pytest.raises(AuthError, match=r"must be 1\.\.64"):
        auth.tenant_for({"x-api-key": "k-acme-123", "x-scope-orgid": "../etc"})
    with pytest.raises(ValueError, match="delegated_tenants"):
        Authenticator(AuthConfig(enabled=True, api_keys=KEYS, delegated_tenants={"acme": ["a b"]}))


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(a)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    Authenticator(AuthConfig(enabled=True, api_keys=KEYS)).tenant_for({"x-api-key": "k-acme-123"})
    assert len(calls) == len(KEYS)  # no early exit after the first key matched


def test_invalid_tenant_in_config_is_refused() -> None:
    with pytest.raises(ValueError, match="tenant"):
        Authenticator(AuthConfig(enabled=True, api_keys={"k": "no spaces please"}))


@pytest.mark.parametrize(("tenant", "ok"), [("a", True), ("A.b_c-9", True), ("x" * 64, True),
                                            ("x" * 65, False), ("", False), ("a/b", False), ("ä", False)])
def test_valid_tenant(tenant: str, ok: bool) -> None:
    assert valid_tenant(tenant) is ok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_limit_admits_everything() -> None:
    rl = RateLimiter(LimitsConfig(), clock=Clock())
    assert all(rl.admit("t", 10**9, 10**12) is None for _ in range(100))


def test_item_bucket_refills_over_time() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=100, items_burst=200)), clock=clock)
    assert rl.admit("t", 150, 0) is None
    assert rl.admit("t", 50, 0) is None
    wait = rl.admit("t", 50, 0)
    assert wait == pytest.approx(0.5)
    clock.now += 0.25
    assert rl.admit("t", 50, 0) == pytest.approx(0.25)
    clock.now += 0.25
    assert rl.admit("t", 50, 0) is None
    assert rl.admit("other", 200, 0) is None  # buckets are per tenant


def test_byte_bucket_and_burst_default_to_rate() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(bytes_per_second=1000)), clock=clock)
    assert rl.admit("t", 1, 1000) is None
    assert rl.admit("t", 1, 1) == pytest.approx(0.001)
    clock.now += 10
    assert rl.admit("t", 1, 600) is None  # refilled, capped at the burst (1000)
    assert rl.admit("t", 1, 600) == pytest.approx(0.2)


def test_both_buckets_must_admit_and_refusal_takes_nothing() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=10, items_burst=10,
                                                    bytes_per_second=100, bytes_burst=100)), clock=clock)
    assert rl.admit("t", 1, 100) is None
    assert rl.admit("t", 1, 50) == pytest.approx(0.5)  # bytes empty; items untouched by the refusal
    clock.now += 1
    assert rl.admit("t", 9, 10) is None


def test_request_larger_than_burst_is_admitted_when_full_and_leaves_debt() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=100, items_burst=100)), clock=clock)
    assert rl.admit("t", 500, 0) is None
    assert rl.admit("t", 1, 0) == pytest.approx(4.01)
    clock.now += 5
    assert rl.admit("t", 1, 0) is None


def test_per_tenant_override() -> None:
    clock = Clock()
    cfg = LimitsConfig(default=RateLimit(items_per_second=1, items_burst=1),
                       tenants={"big": RateLimit()})
    rl = RateLimiter(cfg, clock=clock)
    assert rl.admit("small", 1, 0) is None
    assert rl.admit("small", 1, 0) is not None
    assert all(rl.admit("big", 1000, 0) is None for _ in range(10))


def test_many_tenants_forget_full_buckets() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=1, items_burst=1)), clock=clock)
    rl.MAX_TENANTS = 10
    for i in range(10):
        assert rl.admit(f"t{i}", 1, 0) is None
    clock.now += 5
    assert rl.admit("new", 1, 0) is None
    assert len(rl._buckets) == 1
    assert rl.admit("new", 1, 0) is not None


def test_tenant_table_is_capped_by_evicting_the_least_recently_used() -> None:
    clock = Clock()
    rl = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=1, items_burst=1)), clock=clock)
    rl.MAX_TENANTS = 10
    for i in range(10):
        assert rl.admit(f"t{i}", 1, 0) is None  # every bucket now empty: none can be forgotten
    assert rl.admit("t0", 1, 0) is not None  # t0 used again: t1 is now the least recent
    for i in range(10, 100):
        rl.admit(f"t{i}", 1, 0)
        assert len(rl._buckets) <= 10
    assert "t99" in rl._buckets and "t0" not in rl._buckets
    rl2 = RateLimiter(LimitsConfig(default=RateLimit(items_per_second=1, items_burst=1)), clock=clock)
    rl2.MAX_TENANTS = 3
    for name in ("a", "b", "c"):
        rl2.admit(name, 1, 0)
    rl2.admit("a", 1, 0)
    rl2.admit("d", 1, 0)
    assert list(rl2._buckets) == ["c", "a", "d"]  # b, the least recently used, went


def test_delegated_tenants_load_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    from settings import config

    path = tmp_path / "gw.yaml"
    path.write_text("auth:\n  enabled: true\n  trust_tenant_header: true\n"
                    "  api_keys: {k-platform: platform}\n  delegated_tenants: {platform: [team-a, team-b]}\n")
    cfg = config.load(path, env={})
    assert cfg.auth.delegated_tenants == {"platform": ["team-a", "team-b"]}
    auth = Authenticator(cfg.auth)
    assert auth.tenant_for({"x-api-key": "k-platform", "x-scope-orgid": "team-b"}) == "team-b"
    env = config.load(path, env={"TG_AUTH__DELEGATED_TENANTS__PLATFORM": '["*"]'})
    assert env.auth.delegated_tenants == {"platform": ["*"]}
    with pytest.raises(config.ConfigError, match=r"delegated_tenants\.platform"):
        config.load(path, env={"TG_AUTH__DELEGATED_TENANTS__PLATFORM": "team-a"})
