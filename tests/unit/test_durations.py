"""Go duration strings (settings/durations.py): Go's own ParseDuration cases, then a bounded
property test against exact arithmetic and a bounded fuzz test against the grammar."""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest

from settings.durations import MAX_NS, UNIT_NS, DurationError, parse_duration_ns, parse_duration_s

S, MS, US, M, H = 10**9, 10**6, 10**3, 60 * 10**9, 3600 * 10**9


# The valid cases of Go's src/time/time_test.go (parseDurationTests), negatives left out.
@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0), ("+0", 0), ("5s", 5 * S), ("30s", 30 * S), ("1478s", 1478 * S), ("+5s", 5 * S),
        ("5.0s", 5 * S), ("5.6s", 5 * S + 600 * MS), ("5.s", 5 * S), (".5s", 500 * MS), ("1.0s", S),
        ("1.00s", S), ("1.004s", S + 4 * MS), ("1.0040s", S + 4 * MS), ("100.00100s", 100 * S + MS),
        ("10ns", 10), ("11us", 11 * US), ("12\u00b5s", 12 * US), ("12\u03bcs", 12 * US), ("13ms", 13 * MS),
        ("14s", 14 * S), ("15m", 15 * M), ("16h", 16 * H), ("3h30m", 3 * H + 30 * M),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS), ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6),
        ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS), ("52763797000ns", 52763797000),
        ("0.3333333333333333333h", 20 * M), ("9007199254740993ns", 9007199254740993),
        ("9223372036854775807ns", MAX_NS), ("9223372036854775.807us", MAX_NS),
        ("9223372036s854ms775us807ns", MAX_NS), (".100000000000000000000h", 6 * M),
        ("0.830103483285477580700h", 49 * M + 48 * S + 372539827),
    ],
)
def test_go_parse_duration_cases(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"), ("+", "empty"), ("3", "no unit"), ("1.5", "no unit"), ("1h30", "no unit"),
        ("-5s", "negative"), ("-0", "negative"), ("-", "negative"), ("s", "no number"), (".", "no number"),
        (".s", "no number"), ("+.s", "no number"), ("1d", "unknown unit 'd'"), ("1 s", "unknown unit"),
        (" 1s", "no number"), ("1s ", "unknown unit"), ("1S", "unknown unit"), ("1.5.5s", "no unit"),
        ("9223372036854775808ns", "longest"), ("9223372036854775.808us", "longest"),
        ("9223372036854ms775us808ns", "longest"), ("1" * 200 + "s", "longer than"),
    ],
)
def test_malformed_strings_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(DurationError, match=reason):
        parse_duration_ns(text)


def test_seconds_form() -> None:
    assert parse_duration_s("1h30m") == 5400.0
    assert parse_duration_s("500ms") == 0.5
    assert parse_duration_s("250us") == 0.00025


def test_sums_of_components_are_exact() -> None:
    """Bounded property test: random sums of components, each with a random decimal and unit,
    parse to the exact sum (rational arithmetic) within 1 ns per component: a fraction goes
    through one float64 product as in Go, whole numbers are exact."""
    rng = random.Random(20261201)
    units = list(UNIT_NS)
    for _ in range(3000):
        text, expected, parts = "", Fraction(0), rng.randint(1, 5)
        for _ in range(parts):
            whole = str(rng.randint(0, 10**rng.randint(0, 6)))
            frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 12)))
            number = rng.choice([whole, f"{whole}.{frac}", f".{frac or '0'}"])
            unit = rng.choice(units)
            text += number + unit
            expected += Fraction(number if not number.endswith(".") else number + "0") * UNIT_NS[unit]
        assert abs(parse_duration_ns(text) - expected) <= parts, text


_GO_GRAMMAR = re.compile(r"\+?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)")


def test_fuzz_accepts_exactly_the_grammar() -> None:
    """Bounded fuzz: random strings over the grammar's alphabet (and a few strangers) are either
    accepted as a non-negative duration, when and only when they match Go's grammar (without its
    minus sign) and fit Go's int64 nanoseconds, or refused with DurationError; nothing else is raised."""
    rng = random.Random(7)
    alphabet = [*"0123456789.+-smhnu ", "\u00b5", "\u03bc", "d", "ms", "us", "h"]
    accepted = 0
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        try:
            ns = parse_duration_ns(text)
        except DurationError as e:
            assert not _GO_GRAMMAR.fullmatch(text) or "longest" in str(e), text
        else:
            accepted += 1
            assert _GO_GRAMMAR.fullmatch(text), text
            assert 0 <= ns <= MAX_NS
    assert accepted > 100, "the fuzz reached the accepting side too"
