# The two commands a person needs are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint unit bench protos stack-up stack-down stack-status

$(STAMP): pyproject.toml setup.py otlp/_otlpcheck.c otlp/_otlpjson.c
	@echo "==> creating $(VENV) and installing telemetry-gateway with its dev tools (compiles otlp/_otlpcheck.c and otlp/_otlpjson.c)"
	@$(PYTHON) -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || { echo "==> Python headers missing: installing Debian's python3-dev"; apt-get install -y -q python3-dev >/dev/null; }
	@command -v cc >/dev/null || { echo "==> no C compiler: installing Debian's gcc"; apt-get install -y -q gcc >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Command 1: install and run the gateway on the embedded default (memory bus, file sink under ./data).
run: install
	$(BIN)/telemetry-gateway run $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

## Command 2: install, start the real services from stack/, lint, type-check and run every test.
test: install
	bash stack/up
	$(MAKE) --no-print-directory lint
	bash deploy/tools/up
	$(BIN)/pytest

bench: install
	$(BIN)/telemetry-gateway bench $(ARGS)

stack-up:
	bash stack/up
stack-down:
	bash stack/down
stack-status:
	bash stack/status

## Regenerate protos/*_pb2.py(i) (Prometheus remote-write) from protos/*.proto.
protos: install
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. protos/types.proto protos/remote.proto
