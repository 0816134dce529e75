"""``telemetry-gateway run``: its arguments; the worker is ``gateway.server``, the parent of N
workers ``gateway.supervisor``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gateway.server import run_worker
from gateway.supervisor import supervise
from settings import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (TG_* env vars override it)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes sharing the ports (default: server.workers)")


def main(ns: argparse.Namespace) -> int:
    try:
        cfg = config.load(ns.config)
        if ns.workers is not None:
            cfg.server.workers = ns.workers
            config._check(cfg)
    except (config.ConfigError, OSError) as exc:
        print(f"telemetry-gateway: {exc}", file=sys.stderr)
        return 2
    # Absolute, so the start-up line says exactly where the file sink writes.
    cfg.pipelines.file.data_dir = os.path.abspath(cfg.pipelines.file.data_dir)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    if cfg.server.workers == 1:
        return run_worker(cfg, 0)
    return supervise(cfg)
