"""What every stack service provides, so up/down/status treat Kafka, Elasticsearch, Jaeger and
Prometheus alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from .procs import Unit
from .settings import Settings


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class Service(ABC):
    name: str = ""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    @abstractmethod
    def install(self) -> None:
        """Fetch or build what the service needs into the cache; a no-op when already there."""

    @abstractmethod
    def units(self) -> list[Unit]:
        """The processes of the service in the layout asked for."""

    def all_units(self) -> list[Unit]:
        """Every process this service may have started in any layout (what ``down`` stops)."""
        return self.units()

    def stop_grace(self) -> float:
        """Seconds to wait after SIGTERM before SIGKILL."""
        return 30.0

    def prepare(self) -> None:  # noqa: B027 - most services have nothing to prepare
        """Write configuration and initialise storage right before the units start."""

    @abstractmethod
    def ports(self) -> list[int]:
        """Ports the units bind, checked to be free before starting."""

    @abstractmethod
    def endpoints(self) -> str:
        """Where clients reach it, for ``status``."""

    @abstractmethod
    def health(self) -> Health:
        """Ask the running service whether it serves requests."""

    def unit(self, name: str, argv: list[str], **kwargs: object) -> Unit:
        return Unit(name=name, argv=argv, log=self.s.log_dir / f"{name}.log",
                    pidfile=self.s.run_dir / f"{name}.pid", **kwargs)  # type: ignore[arg-type]
