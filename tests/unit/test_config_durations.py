"""Durations in the config: the Collector's name with a Go duration string, or the ``_s`` number of
seconds, in YAML and in ``TG_*`` overrides; both at once, bare numbers and bad strings refused."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import config
from settings.config import Config, ConfigError, load


def _duration_paths(cls: type[Any] = Config, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths (``_s`` form) of every Seconds field reachable through dataclass fields."""
    out: list[tuple[str, ...]] = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if config._is_duration(hint):
            out.append((*prefix, name))
        elif dataclasses.is_dataclass(hint):
            out += _duration_paths(hint, (*prefix, name))  # type: ignore[arg-type]
    return out


DURATIONS = _duration_paths()


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        raw = {part: raw}
    return raw


def _get(cfg: Config, path: tuple[str, ...]) -> Any:
    node: Any = cfg
    for part in path:
        node = getattr(node, part)
    return node


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def test_the_durations_are_the_seconds_settings_and_only_those() -> None:
    names = {".".join(p) for p in DURATIONS}
    assert len(names) == 16
    assert {"server.tls.reload_interval_s", "admin.tls.reload_interval_s",
            "server.grpc.keepalive.server_parameters.max_connection_age_s",
            "server.grpc.keepalive.enforcement_policy.min_time_s", "server.http.max_connection_age_s",
            "server.read_header_timeout_s", "spool.max_age_s", "pipelines.prometheus.timeout_s",
            "pipelines.otlp_grpc.timeout_s", "pipelines.otlp_http.timeout_s"} <= names
    assert "spool.replay_max_bytes_per_s" not in names, "a rate, not a duration"


@pytest.mark.parametrize("path", DURATIONS, ids=".".join)
def test_every_duration_takes_the_collector_name_in_yaml_and_env(tmp_path: Path,
                                                                  path: tuple[str, ...]) -> None:
    collector = (*path[:-1], path[-1][:-2])
    assert _get(load(_write(tmp_path, _nested(collector, "1m30s")), env={}), path) == 90.0
    env_key = "TG_" + "__".join(collector).upper()
    assert _get(load(env={env_key: "1.5s"}), path) == 1.5
    assert _get(load(env={env_key + "_S": "7"}), path) == 7.0, "the _s form still works"


def test_the_collectors_keepalive_block_reads_as_it_does_there(tmp_path: Path) -> None:
    """The keepalive block of the Collector's OTLP receiver test configuration
    (receiver/otlpreceiver/testdata/config.yaml), pasted under server.grpc."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        "server:\n  grpc:\n    keepalive:\n      server_parameters:\n        max_connection_idle: 11s\n"
        "        max_connection_age: 12s\n        max_connection_age_grace: 13s\n        time: 30s\n"
        "        timeout: 5s\n      enforcement_policy:\n        min_time: 10s\n"
        "        permit_without_stream: true\n"
        "  tls: {cert_file: a.crt, key_file: a.key, reload_interval: 1h30m}\n"
    )
    cfg = load(path, env={})
    sp = cfg.server.grpc.keepalive.server_parameters
    assert (sp.max_connection_idle_s, sp.max_connection_age_s, sp.max_connection_age_grace_s, sp.time_s,
            sp.timeout_s) == (11.0, 12.0, 13.0, 30.0, 5.0)
    assert cfg.server.grpc.keepalive.enforcement_policy.min_time_s == 10.0
    assert cfg.server.tls.reload_interval_s == 5400.0


def test_both_forms_in_one_source_are_refused_naming_both(tmp_path: Path) -> None:
    both = "server.tls.reload_interval and server.tls.reload_interval_s"
    with pytest.raises(ConfigError, match=both):
        load(_write(tmp_path, {"server": {"tls": {"reload_interval": "5m", "reload_interval_s": 300}}}),
             env={})
    with pytest.raises(ConfigError, match=both):
        load(env={"TG_SERVER__TLS__RELOAD_INTERVAL": "5m", "TG_SERVER__TLS__RELOAD_INTERVAL_S": "300"})


def test_the_environment_wins_over_the_file_across_the_two_forms(tmp_path: Path) -> None:
    path = _write(tmp_path, {"spool": {"max_age_s": 60}, "server": {"idle_timeout": "2m"}})
    cfg = load(path, env={"TG_SPOOL__MAX_AGE": "10m", "TG_SERVER__IDLE_TIMEOUT_S": "5"})
    assert (cfg.spool.max_age_s, cfg.server.idle_timeout_s) == (600.0, 5.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (30, r"server\.read_timeout: 30 has no unit; .*read_timeout_s: 30 for seconds.*nanoseconds"),
        (1.5, r"server\.read_timeout: 1\.5 has no unit"),
        ("30", r"server\.read_timeout: '30' has no unit after '30'; expected a duration such as 30s"),
        ("-5s", r"server\.read_timeout: '-5s' is negative; expected a duration such as 30s, 500ms or 1h30m"),
        ("5 min", r"server\.read_timeout: '5 min' has an unknown unit ' min'; expected .*us, ms, s, m, h"),
        ("1d", r"server\.read_timeout: '1d' has an unknown unit 'd'"),
        (True, r"server\.read_timeout: expected a duration such as 30s"),
        (None, r"server\.read_timeout: expected a duration such as 30s"),
        ([1], r"server\.read_timeout: expected a duration such as 30s"),
        ("0s", r"server\.read_timeout_s \(or read_timeout\): must be more than 0 seconds"),
    ],
)
def test_bad_durations_are_refused_with_the_key_and_the_accepted_form(tmp_path: Path, value: Any,
                                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_write(tmp_path, {"server": {"read_timeout": value}}), env={})


def test_a_bare_zero_is_zero_under_the_collector_name(tmp_path: Path) -> None:
    """0 is the one unit-less number Go's ParseDuration takes; it means "off" here whatever its unit."""
    assert load(_write(tmp_path, {"spool": {"max_age": 0}}), env={}).spool.max_age_s == 0.0
    assert load(env={"TG_SERVER__HTTP__MAX_CONNECTION_AGE": "0"}).server.http.max_connection_age_s == 0.0


def test_a_duration_string_under_the_seconds_name_points_to_the_collector_name() -> None:
    with pytest.raises(ConfigError, match=r"server\.tls\.reload_interval_s: expected a number of seconds, "
                                          r"got '5m'; .* use reload_interval: 5m"):
        load(env={"TG_SERVER__TLS__RELOAD_INTERVAL_S": "5m"})


def test_a_rate_takes_no_duration_name() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load(env={"TG_SPOOL__REPLAY_MAX_BYTES_PER": "5s"})


def test_the_example_config_still_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "gateway.example.yaml"
    cfg = load(example, env={})
    assert cfg.server.grpc.keepalive.server_parameters.max_connection_age_s == 120.0


@pytest.mark.parametrize("value", [".nan", ".inf", "-1"])
@pytest.mark.parametrize("path", DURATIONS, ids=".".join)
def test_a_negative_or_non_finite_number_of_seconds_is_refused_for_every_duration(
        path: tuple[str, ...], value: str) -> None:
    # .nan passed every "< 0" check and crashed the gRPC server's start (round(nan)); .inf
    # overflowed it; a negative pipelines.*.timeout_s was accepted, though "-1s" is refused.
    key = "TG_" + "__".join(path).upper()
    with pytest.raises(ConfigError, match=rf"^{'.'.join(path)}: .* is not a duration"):
        load(env={key: value})


@pytest.mark.parametrize(("text", "hint"), [
    ("300", "write the number without quotes (reload_interval_s: 300)"),
    ("5m", "use reload_interval: 5m"),
    ("5 m", "or use reload_interval: a duration such as"),
    ("nan", "or use reload_interval: a duration such as"),
])
def test_a_string_under_the_seconds_name_gets_a_hint_that_loads(tmp_path: Path, text: str, hint: str) -> None:
    # A quoted "300" was told to use reload_interval: 300, which is refused (a bare number).
    path = _write(tmp_path, {"server": {"tls": {"reload_interval_s": text}}})
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert hint in str(caught.value), str(caught.value)
    if hint.startswith("use "):  # the Collector's name with the same string: that loads
        assert load(_write(tmp_path, {"server": {"tls": {"reload_interval": text}}}), env={})
