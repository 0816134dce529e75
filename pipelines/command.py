"""``telemetry-gateway pipelines --sink NAME``: its arguments; the worker is ``pipelines.runner``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from typing import cast

from pipelines.runner import run
from pipelines.sinks import SINKS
from settings import config as config_mod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sink", required=True, choices=SINKS, help="which sink this worker feeds")
    parser.add_argument("--config", metavar="FILE", help="YAML config (TG_* environment overrides apply)")
    parser.add_argument("--admin-port", type=int, default=None,
                        help="port of /metrics (default: pipelines.admin_port, 8889)")


def main(ns: argparse.Namespace) -> int:
    cfg = config_mod.load(ns.config)
    if ns.admin_port is not None:
        cfg.pipelines.admin_port = ns.admin_port
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
        runner: Callable[..., object] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    rc = runner(run(cfg, ns.sink))
    return cast(int, rc)
