"""Metric and label names per the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec.

Names are the most visible part of the conversion (they are what people type in PromQL), and
they are computed once per metric, not per sample, so they are cached.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache


class Kind(Enum):
    """What a metric becomes in Prometheus; decides the ``_total``/``_ratio`` suffixes."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"


# UCUM units (as OTel semantic conventions use them) to Prometheus base unit words.
UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "%": "percent",
}
# The unit after "/" ("m/s" -> "meters_per_second").
PER_UNIT_WORDS = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}

_NAME_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def _unit_tokens(word: str) -> list[str]:
    return [t for t in _NAME_SPLIT.split(word) if t]


@lru_cache(maxsize=8192)
def metric_name(name: str, unit: str, kind: Kind) -> str:
    """Prometheus name: sanitised, unit words appended unless present, then ``_total``/``_ratio``.

    ``http.server.request.duration`` in ``s`` (histogram) -> ``http_server_request_duration_seconds``;
    ``requests`` in ``{request}`` (counter) -> ``requests_total``; a gauge in ``1`` -> ``..._ratio``.
    """
    tokens = [t for t in _NAME_SPLIT.split(name) if t]
    unit = _ANNOTATION.sub("", unit).strip()
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main and main != "1":
        for tok in _unit_tokens(UNIT_WORDS.get(main, main)):
            if tok not in tokens:
                tokens.append(tok)
    if per:
        per_tokens = _unit_tokens(PER_UNIT_WORDS.get(per, per))
        if per_tokens and tokens[-len(per_tokens) - 1:] != ["per", *per_tokens]:
            tokens += ["per", *per_tokens]
    if kind is Kind.COUNTER:
        tokens = [t for t in tokens if t != "total"]
        tokens.append("total")
    elif kind is Kind.GAUGE and main == "1" and not per and "ratio" not in tokens:
        tokens.append("ratio")
    out = "_".join(tokens) or "_"
    return "_" + out if out[0].isdigit() else out


@lru_cache(maxsize=8192)
def label_name(key: str) -> str:
    """Attribute key as a label name: invalid characters to ``_``, digits and ``_x`` prefixed.

    ``http.method`` -> ``http_method``; ``2xx`` -> ``key_2xx``; ``_private`` -> ``key_private``;
    ``__reserved`` stays (Prometheus-internal names are left to the caller).
    """
    if not key:
        return "key_"
    out = _LABEL_INVALID.sub("_", key)
    if out[0].isdigit():
        return "key_" + out
    if out.startswith("_") and not out.startswith("__"):
        return "key" + out
    return out


def format_bound(value: float) -> str:
    """A bucket bound or quantile the way Prometheus prints it: shortest, no exponent."""
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exp = text.split("e")
    digits = mantissa.replace("-", "").replace(".", "")
    shift = int(exp) + (mantissa.replace("-", "").find(".") if "." in mantissa else len(digits))
    sign = "-" if value < 0 else ""
    if shift <= 0:
        return f"{sign}0.{'0' * -shift}{digits}"
    return f"{sign}{digits[:shift]}{'0' * max(shift - len(digits), 0)}" + (
        f".{digits[shift:]}" if shift < len(digits) else "")
