"""The OpenTelemetry Java SDK with its JDK HTTP sender, as jars in the cache for e2e tests.

Not a service: nothing runs. ``tests/e2e/test_java_sdk.py`` starts
``tests/e2e/java/OtlpJdkSender.java`` with the JDK's single-file source launcher on this
classpath. ``opentelemetry-exporter-otlp`` brings the OkHttp sender by default; it is excluded so
that the only ``HttpSenderProvider`` left is the one of ``opentelemetry-exporter-sender-jdk``
(``java.net.http.HttpClient``, which offers ``Upgrade: h2c`` on cleartext requests).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import maven
from .settings import Settings

NAME = "otel-java"
_PORTS_ENV = Path(__file__).resolve().parent.parent / "ports.env"


def coords(version: str) -> list[str]:
    return [f"io.opentelemetry:{a}:{version}" for a in
            ("opentelemetry-sdk", "opentelemetry-exporter-otlp", "opentelemetry-exporter-sender-jdk")]


EXCLUDE = ["io.opentelemetry:opentelemetry-exporter-sender-okhttp"]


def libs_dir(cache: Path, version: str) -> Path:
    return cache / NAME / version / "libs"


def default_version() -> str:
    """``TG_STACK_OTEL_JAVA_VERSION``, else its default in ``stack/ports.env`` (for tests)."""
    env = os.environ.get("TG_STACK_OTEL_JAVA_VERSION")
    if env:
        return env
    m = re.search(r"TG_STACK_OTEL_JAVA_VERSION=\$\{TG_STACK_OTEL_JAVA_VERSION:-([^}]+)\}",
                  _PORTS_ENV.read_text())
    if m is None:
        raise RuntimeError(f"{_PORTS_ENV} has no TG_STACK_OTEL_JAVA_VERSION")
    return m.group(1)


def install(s: Settings) -> None:
    """Fetch the jars with Maven once (a no-op when the cache has them)."""
    maven.copy_dependencies(s, f"{NAME}-{s.otel_java_version}", coords(s.otel_java_version),
                            libs_dir(s.cache, s.otel_java_version), exclude=EXCLUDE)
