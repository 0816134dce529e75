"""Only the C part of the build; everything else is in pyproject.toml.

The extensions are declared here rather than as ``[[tool.setuptools.ext-modules]]`` in
pyproject.toml: setuptools still calls that table experimental and warns once per build hook.
"""

from setuptools import Extension, setup

_FLAGS = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(ext_modules=[
    Extension("otlp._otlpcheck", ["otlp/_otlpcheck.c"], extra_compile_args=_FLAGS),
    # protobuf -> OTLP/JSON for the file sink (otlp/proto_json.py).
    Extension("otlp._otlpjson", ["otlp/_otlpjson.c"], extra_compile_args=_FLAGS),
])
