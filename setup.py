"""Only the C part of the build; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("otlp._otlpcheck", ["otlp/_otlpcheck.c"],
                             extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
