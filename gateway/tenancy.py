"""Who is calling (client certificate, API key or trusted header -> tenant) and how much they may send.

Tenant ids end up in Kafka headers, Elasticsearch index names and Prometheus labels, so they
are checked here, once, against a conservative alphabet. Keys are compared in constant time
against every configured key, so response timing does not reveal which key (or how much of
one) matched.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from otlp.signals import DEFAULT_TENANT, TENANT_HEADER
from settings.config import AuthConfig, LimitsConfig, RateLimit

__all__ = ["AuthError", "Authenticator", "RateLimiter", "valid_tenant"]

_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class AuthError(Exception):
    """The caller is not authenticated (HTTP 401 / gRPC UNAUTHENTICATED)."""


def valid_tenant(tenant: str) -> bool:
    return _TENANT.fullmatch(tenant) is not None


class Authenticator:
    """Tenant of a request, by this policy (``auth.*``):

    - ``enabled`` off, ``trust_tenant_header`` off: every request is tenant ``default``.
    - ``trust_tenant_header`` only: X-Scope-OrgID names the tenant (a proxy in front sets it),
      ``default`` without it.
    - ``enabled`` only: the API key's tenant; no key or an unknown one is refused.
    - both: a valid key is still required; X-Scope-OrgID may then name the key's own tenant or
      one of ``delegated_tenants[<key's tenant>]`` (``"*"``: any), else the request is refused.
      A header alone never selects a tenant when keys are in force.
    - before all of these, ``client_cert_tenants``: a verified client certificate (mTLS) whose
      subject CN or a SAN is mapped names the tenant, whatever the headers or key say (the
      receivers pass only names of certificates the configured client CA verified; nothing a
      client sends in headers or attributes can add one). The first mapped name wins, CN first.

    Tenant ids are 1..64 characters of ``[A-Za-z0-9_.-]``, configured or presented; sinks map
    distinct ids to distinct store names.
    """

    def __init__(self, cfg: AuthConfig) -> None:
        self._enabled = cfg.enabled
        self._trust_header = cfg.trust_tenant_header
        for tenant in cfg.api_keys.values():
            if not valid_tenant(tenant):
                raise ValueError(f"auth.api_keys: tenant {tenant!r} is not 1..64 chars of [A-Za-z0-9_.-]")
        for owner, tenants in cfg.delegated_tenants.items():
            for tenant in tenants:
                if tenant != "*" and not valid_tenant(tenant):
                    raise ValueError(f"auth.delegated_tenants.{owner}: tenant {tenant!r} is not 1..64 chars "
                                     "of [A-Za-z0-9_.-] (or \"*\")")
        self._delegated = {owner: frozenset(tenants) for owner, tenants in cfg.delegated_tenants.items()}
        self._keys = [(key.encode(), tenant) for key, tenant in cfg.api_keys.items() if key]
        for name, tenant in cfg.client_cert_tenants.items():
            if not valid_tenant(tenant):
                raise ValueError(f"auth.client_cert_tenants.{name}: tenant {tenant!r} is not 1..64 chars "
                                 "of [A-Za-z0-9_.-]")
        self._cert_tenants = dict(cfg.client_cert_tenants)

    def tenant_for(self, headers: Mapping[str, str], client_names: Sequence[str] = ()) -> str:
        """The tenant for a request with these (lower-cased) headers and verified client
        certificate names; raise AuthError if none."""
        if self._cert_tenants:
            for name in client_names:
                tenant = self._cert_tenants.get(name)
                if tenant is not None:
                    return tenant
        claimed = headers.get(TENANT_HEADER) if self._trust_header else None
        if claimed is not None and not valid_tenant(claimed):
            raise AuthError(f"{TENANT_HEADER} must be 1..64 characters of [A-Za-z0-9_.-]")
        if not self._enabled:
            return claimed or DEFAULT_TENANT
        key = _presented_key(headers)
        if key is None:
            raise AuthError("missing credentials: send 'authorization: Bearer <key>' or 'x-api-key: <key>'")
        found = self._match(key.encode())
        if found is None:
            raise AuthError("invalid API key")
        if claimed is None or claimed == found:
            return found
        allowed = self._delegated.get(found, frozenset())
        if claimed in allowed or "*" in allowed:
            return claimed
        raise AuthError(f"this API key may not send for tenant {claimed!r} "
                        f"(auth.delegated_tenants.{found})")

    def _match(self, presented: bytes) -> str | None:
        found = None
        for key, tenant in self._keys:
            if hmac.compare_digest(key, presented) and found is None:
                found = tenant
        return found


def _presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    if key and key.strip():
        return key.strip()
    return None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class _Limit:
    """One token bucket configuration; burst defaults to one second of rate."""

    __slots__ = ("burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst if burst > 0 else rate


class RateLimiter:
    """Token buckets on items and bytes per tenant.

    A request larger than the burst is admitted when the bucket is full and leaves it in debt,
    so big requests are slowed down rather than refused for ever. Full buckets carry no state
    (a new bucket starts full), so they are forgotten when there are many tenants; if none is
    full, the least recently used one goes, so tenants taken from a trusted header cannot grow
    the table past ``MAX_TENANTS`` (its tenant starts again with a full bucket).
    """

    MAX_TENANTS = 10_000

    def __init__(self, cfg: LimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._limits: dict[str, tuple[_Limit | None, _Limit | None]] = {}
        self._buckets: OrderedDict[str, tuple[_Bucket, _Bucket]] = OrderedDict()  # least recent first

    def _limits_for(self, tenant: str) -> tuple[_Limit | None, _Limit | None]:
        limits = self._limits.get(tenant)
        if limits is None:
            rl: RateLimit = self._cfg.tenants.get(tenant, self._cfg.default)
            items = _Limit(rl.items_per_second, rl.items_burst) if rl.items_per_second > 0 else None
            nbytes = _Limit(rl.bytes_per_second, rl.bytes_burst) if rl.bytes_per_second > 0 else None
            limits = (items, nbytes)
            if len(self._limits) < self.MAX_TENANTS or tenant in self._cfg.tenants:
                self._limits[tenant] = limits
        return limits

    def admit(self, tenant: str, items: int, nbytes: int) -> float | None:
        """None if admitted (tokens taken), else seconds until it could be (for Retry-After)."""
        item_limit, byte_limit = self._limits_for(tenant)
        if item_limit is None and byte_limit is None:
            return None
        now = self._clock()
        buckets = self._buckets.get(tenant)
        if buckets is not None:
            self._buckets.move_to_end(tenant)
        else:
            if len(self._buckets) >= self.MAX_TENANTS:
                self._forget_full(now)
            while len(self._buckets) >= self.MAX_TENANTS:
                self._buckets.popitem(last=False)
            buckets = (_Bucket(item_limit.burst if item_limit else 0.0, now),
                       _Bucket(byte_limit.burst if byte_limit else 0.0, now))
            self._buckets[tenant] = buckets
        wait = 0.0
        for limit, bucket, amount in ((item_limit, buckets[0], items), (byte_limit, buckets[1], nbytes)):
            if limit is None:
                continue
            bucket.tokens = min(limit.burst, bucket.tokens + (now - bucket.updated) * limit.rate)
            bucket.updated = now
            need = min(float(amount), limit.burst)
            if bucket.tokens < need:
                wait = max(wait, (need - bucket.tokens) / limit.rate)
        if wait > 0:
            return wait
        if item_limit is not None:
            buckets[0].tokens -= items
        if byte_limit is not None:
            buckets[1].tokens -= nbytes
        return None

    def _forget_full(self, now: float) -> None:
        for tenant, (ib, bb) in list(self._buckets.items()):
            il, bl = self._limits_for(tenant)
            full_i = il is None or ib.tokens + (now - ib.updated) * il.rate >= il.burst
            full_b = bl is None or bb.tokens + (now - bb.updated) * bl.rate >= bl.burst
            if full_i and full_b:
                del self._buckets[tenant]
