"""Go duration strings ("30s", "500ms", "1h30m"), as the OpenTelemetry Collector's users write them.

The Collector reads its duration settings (``configtls``'s ``reload_interval``, ``configgrpc``'s
``keepalive.server_parameters.max_connection_age``, ``confighttp``'s ``read_header_timeout``, ...)
with Go's ``time.ParseDuration``; :func:`parse_duration_ns` takes the same grammar so a value copied
from a Collector configuration means the same here. Source: Go's ``src/time/format.go``
(``ParseDuration``), https://pkg.go.dev/time#ParseDuration.

One difference: negative durations (a leading ``-``) are refused, since no setting here has a
meaning for one.
"""

from __future__ import annotations

import re

# Nanoseconds per unit, as Go's ``unitMap``: "us" and both micro signs (U+00B5 MICRO SIGN, which
# Go's source spells, and U+03BC GREEK SMALL LETTER MU, which keyboards often produce).
UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
# Go holds a Duration in an int64 of nanoseconds (about 292 years); a longer value is refused
# there, so it is here too: a configuration accepted here would be accepted by the Collector.
MAX_NS = (1 << 63) - 1
# A configuration value, not a stream: refusing long strings keeps int() off huge digit runs.
_MAX_LEN = 128
# One "<number><unit>" component: digits, an optional fraction, then everything up to the next
# digit or dot as the unit (Go's scanner takes the unit the same way, then looks it up).
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
ACCEPTED_FORM = "a duration such as 30s, 500ms or 1h30m (units ns, us, ms, s, m, h)"


class DurationError(ValueError):
    """A string that is not a non-negative Go duration; the message says what is wrong with it."""


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into whole nanoseconds (an int, 0 <= result <= 2**63 - 1).

    Grammar (Go's ``time.ParseDuration``): ``"0"``, or an optional ``+`` then one or more
    components ``<decimal><unit>`` summed, where a decimal is ``12``, ``1.5``, ``.5`` or ``1.``
    and a unit one of ``ns``, ``us`` (``µs``), ``ms``, ``s``, ``m``, ``h``: ``"1h30m"``,
    ``"1.5h"``, ``"300ms"``, ``"2m3.5s"``. A fraction is converted as Go does (float64, then
    truncated to whole nanoseconds), so a result equals Go's to the nanosecond. No spaces, no
    bare numbers other than ``"0"``.

    Raises :class:`DurationError` for an empty string, a leading ``-``, a missing or unknown
    unit, a component without digits, or a total beyond Go's int64 nanoseconds.
    """
    if len(text) > _MAX_LEN:
        raise DurationError(f"is longer than {_MAX_LEN} characters")
    if text.startswith("-"):
        raise DurationError("is negative")
    body = text[1:] if text.startswith("+") else text
    if body == "0":
        return 0
    if not body:
        raise DurationError("is empty")
    total = 0
    pos = 0
    while pos < len(body):
        m = _COMPONENT.match(body, pos)
        assert m is not None  # every part of the pattern may match empty
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise DurationError(f"has no number before {body[pos:]!r}")
        if not unit:
            raise DurationError(f"has no unit after {m.group(0)!r}")
        scale = UNIT_NS.get(unit)
        if scale is None:
            raise DurationError(f"has an unknown unit {unit!r}")
        total += int(whole or "0") * scale
        if frac:
            total += _fraction_ns(frac, scale)
        if total > MAX_NS:
            raise DurationError("is longer than Go's longest duration (about 292 years)")
        pos = m.end()
    return total


def _fraction_ns(digits: str, scale: int) -> int:
    """Nanoseconds of ``.<digits>`` of a unit of ``scale`` ns, computed as Go does (so a value
    means to the nanosecond what it means to the Collector): the digits that fit an int64, then
    one float64 multiplication, truncated. Within 1 ns of the exact value."""
    f, div = 0, 1.0
    for d in digits:
        if f > MAX_NS // 10:
            break  # Go's leadingFraction ignores the digits past int64
        f = f * 10 + ord(d) - 48
        div *= 10
    return int(float(f) * (float(scale) / div))


def parse_duration_s(text: str) -> float:
    """:func:`parse_duration_ns`, in seconds (a float); same errors."""
    return parse_duration_ns(text) / 1e9
