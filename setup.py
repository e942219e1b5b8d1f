"""Builds the compiled step loop of the twin's engine; everything else is in pyproject.toml.

``-ffp-contract=off`` keeps the arithmetic the reference engine's, operation by operation (no fused
multiply-adds), so both give bit-identical request times.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("adaptergym.twin._engine", ["adaptergym/twin/_engine.c"],
                             extra_compile_args=["-O2", "-ffp-contract=off", "-std=c11"])])
