# telemetry-gateway image: `telemetry-gateway run` by default, `pipelines --sink NAME` by argument.
#
#   podman build --format docker -t telemetry-gateway .                     # from python:3.12-slim
#   podman build --format docker --build-arg BASE_IMAGE=localhost/debian:bookworm \
#       --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t telemetry-gateway .
#
# BASE_IMAGE is any Debian-based image: with Python (python:3.12-slim, Python 3.12) it is used as
# is; without (a bare Debian, as deploy/tools/up makes with debootstrap) Debian's python3 is
# installed (3.11 on bookworm). `--format docker` keeps the HEALTHCHECK (OCI images drop it).
# Behind a TLS-intercepting proxy pass its CA bundle as the build secret `pip_ca`: pip uses it
# during the build and it never lands in a layer. Without the secret the build runs as well.
ARG BASE_IMAGE=python:3.12-slim

# -- build: a virtualenv with the gateway and its C extension; compilers stay in this stage ------
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN set -eu; \
    pkgs="gcc libc6-dev"; \
    if ! command -v python3 >/dev/null; then pkgs="$pkgs python3 python3-venv python3-dev"; fi; \
    apt-get update -q; apt-get install -y -q --no-install-recommends $pkgs; rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/telemetry-gateway
ENV PATH=/opt/telemetry-gateway/bin:$PATH
# Dependencies first, from pyproject.toml alone: a source change reuses this layer.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
    && pip install --quiet "setuptools>=69" wheel -r /tmp/requirements.txt
COPY . /src
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --quiet --no-deps --no-build-isolation /src \
    && pip uninstall --quiet -y wheel \
    && find /opt/telemetry-gateway -name __pycache__ -prune -exec rm -rf {} + \
    && python3 -m compileall -q /opt/telemetry-gateway >/dev/null

# -- runtime: the interpreter, the virtualenv, a non-root user ------------------------------------
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN set -eu; \
    if ! command -v python3 >/dev/null; then \
      printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n' \
        > /etc/dpkg/dpkg.cfg.d/01-slim; \
      apt-get update -q; apt-get install -y -q --no-install-recommends python3; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    fi; \
    groupadd --system --gid 10001 telemetry-gateway; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/telemetry-gateway --create-home \
      --shell /usr/sbin/nologin telemetry-gateway
COPY --from=build /opt/telemetry-gateway /opt/telemetry-gateway
COPY deploy/image/healthcheck.py /opt/telemetry-gateway/healthcheck.py
ENV PATH=/opt/telemetry-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TG_PIPELINES__FILE__DATA_DIR=/var/lib/telemetry-gateway/data
USER 10001:10001
WORKDIR /var/lib/telemetry-gateway
# OTLP/gRPC, OTLP/HTTP, admin (/metrics /healthz /readyz); a pipelines worker serves /metrics on 8889.
EXPOSE 4317 4318 8888
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python3", "/opt/telemetry-gateway/healthcheck.py"]
# SIGTERM: stop accepting, answer what is in flight (5 s), flush to the bus, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["telemetry-gateway"]
CMD ["run"]
