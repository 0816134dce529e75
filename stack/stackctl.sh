#!/usr/bin/env bash
# Shared entry of stack/up, stack/down and stack/status: load ports.env, run the stdlib-only
# Python module that does the work (no virtualenv needed, so `make test` can call it first).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
set -a
# shellcheck source=ports.env
. "$here/ports.env"
set +a
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m stackctl "$@"
