"""Metric names, label names and units per the OpenTelemetry "Prometheus and OpenMetrics
Compatibility" spec (section "OTLP Metric points to Prometheus", as stabilised in 2026), with
Prometheus' own OTLP endpoint (``prometheus/otlptranslator``) as the second reference.

Names are the most visible part of the conversion (they are what people type in PromQL), and
they are computed once per metric or attribute key, not per sample, so they are cached.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache


class Kind(Enum):
    """What a metric becomes in Prometheus; decides the ``_total``/``_ratio`` suffixes.

    ``UPDOWN`` is a non-monotonic sum: a Prometheus gauge (TYPE ``gauge``) that, unlike an OTLP
    gauge, never gets ``_ratio`` (as in Prometheus' otlptranslator, which appends it to
    ``MetricTypeGauge`` only).
    """

    COUNTER = "counter"
    GAUGE = "gauge"
    UPDOWN = "updown"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"


# UCUM units (as OTel semantic conventions use them) to Prometheus base unit words: the spec's
# table, plus ``KBy`` (otlptranslator's spelling of ``kBy``) and the ``B``-family kept from before.
UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tebibytes",
    "kBy": "kilobytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "%": "percent",
}
# The unit after "/" ("m/s" -> "meters_per_second").
PER_UNIT_WORDS = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}

_NAME_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
# ASCII classes on purpose: a non-ASCII letter is as invalid in a legacy Prometheus name as "."
# (``str.isalnum`` would keep it). A run of invalid characters and underscores becomes one "_".
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9]*[^a-zA-Z0-9_][^a-zA-Z0-9]*|__+")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def _unit_tokens(word: str) -> list[str]:
    return [t for t in _NAME_SPLIT.split(word) if t]


@lru_cache(maxsize=8192)
def metric_name(name: str, unit: str, kind: Kind) -> str:
    """Prometheus name: sanitised, unit words appended unless present, then ``_total``/``_ratio``.

    ``http.server.request.duration`` in ``s`` (histogram) -> ``http_server_request_duration_seconds``;
    ``requests`` in ``{request}`` (counter) -> ``requests_total``; an OTLP gauge in ``1`` ->
    ``..._ratio``, a non-monotonic sum (``Kind.UPDOWN``) or counter in ``1`` gets no unit suffix.
    The spec (since 2026) gives ``1`` no unit word at all; ``_ratio`` on gauges is kept because
    Prometheus' own OTLP endpoint and the Collector still write it (README, "Prometheus remote
    write"). Runs of invalid characters become one ``_``; a leading digit gets ``_``.
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
    elif kind is Kind.GAUGE and main == "1" and not per:
        tokens = [t for t in tokens if t != "ratio"]
        tokens.append("ratio")
    out = "_".join(tokens) or "_"
    return "_" + out if out[0].isdigit() else out


@lru_cache(maxsize=8192)
def unit_word(unit: str) -> str:
    """The Prometheus unit word of an OTLP (UCUM) unit, for the ``UNIT`` metadata.

    ``s`` -> ``seconds``, ``By`` -> ``bytes``, ``By/s`` -> ``bytes_per_second``, ``{request}`` ->
    ``""`` (annotations are dropped: a count of things is unitless), ``1`` -> ``""`` (the spec has
    no word for it), ``{req}/s`` -> ``per_second``, an unknown ``furlongs`` stays ``furlongs``.
    The same words the metric name's unit suffix is made of.
    """
    unit = _ANNOTATION.sub("", unit).strip()
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    tokens = _unit_tokens(UNIT_WORDS.get(main, main)) if main and main != "1" else []
    if per:
        per_tokens = _unit_tokens(PER_UNIT_WORDS.get(per, per))
        if per_tokens:
            tokens += ["per", *per_tokens]
    return "_".join(tokens)


@lru_cache(maxsize=8192)
def label_name(key: str) -> str:
    """Attribute key as a label name, per the spec's "Metric Attributes" section.

    Every character outside ``[a-zA-Z0-9_]`` (a non-ASCII letter too) becomes ``_`` and a run of
    underscores becomes one, so ``http.method`` -> ``http_method``, ``ügyfél`` -> ``_gyf_l``,
    ``a..b`` -> ``a_b``; ``_private`` stays ``_private`` (the spec and otlptranslator no longer
    prefix it with ``key``); a leading digit is prefixed as otlptranslator does: ``2xx`` ->
    ``key_2xx``; an empty key is ``key_``. Because runs collapse, no attribute can produce a name
    starting with ``__``, which Prometheus reserves for itself (``__name__``): ``__reserved__``
    -> ``_reserved_``, where otlptranslator keeps ``__x__`` as is.
    """
    if not key:
        return "key_"
    out = _LABEL_INVALID.sub("_", key)
    if out[0].isdigit():
        return "key_" + out
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
