"""``telemetry-gateway`` entry point. Each subcommand's module owns its own arguments.

Subcommand modules are imported lazily so ``run`` does not pay for the pipelines' or the
bench's imports at start-up.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help). The module has add_arguments(parser) and main(namespace) -> int.
SUBCOMMANDS = {
    "run": ("gateway.command", "run the gateway: receivers, batcher, bus (embedded: memory bus + file sink)"),
    "pipelines": ("pipelines.command", "consume the Kafka topics into one sink (consumer group per sink)"),
    "bench": ("bench.command", "load-test the gateway and the OpenTelemetry Collector side by side"),
    "spool": ("bus.spool.command", "inspect or replay a disk spool (e.g. one a dead node left behind)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telemetry-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    ns = parser.parse_args(argv)
    rc: int = importlib.import_module(SUBCOMMANDS[ns.command][0]).main(ns)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
