"""Prompt/output length distributions: ShareGPT-like, fixed, lognormal."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources

import numpy as np

from adaptergym.workload.spec import LengthSpec


@cache
def sharegpt_table() -> dict:
    """The shipped ShareGPT length model: quantile knots per length and their copula correlation."""
    return json.loads(resources.files("adaptergym.data").joinpath("sharegpt_lengths.json").read_text())


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` (input_tokens, output_tokens) pairs as int64 arrays."""
    if spec.kind == "fixed":
        return np.full(n, spec.input_tokens, np.int64), np.full(n, spec.output_tokens, np.int64)
    if spec.kind == "sharegpt":
        return sample_sharegpt(n, rng)
    if spec.kind != "lognormal":
        raise ValueError(f"lengths of kind {spec.kind!r} come from the trace file, not a distribution")

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        i = rng.lognormal(np.log(spec.input_median), spec.input_sigma, m)
        o = rng.lognormal(np.log(spec.output_median), spec.output_sigma, m)
        i = np.clip(np.rint(i), 1, spec.max_input_tokens)
        return i.astype(np.int64), np.maximum(np.rint(o), 1).astype(np.int64)

    return _capped(draw, n, spec.max_total_tokens)


def longest_request_tokens(spec: LengthSpec) -> int:
    """The most prompt + output tokens one request can have under ``spec`` (each distribution is capped)."""
    if spec.kind == "fixed":
        return spec.input_tokens + spec.output_tokens
    if spec.kind == "sharegpt":
        return int(sharegpt_table()["max_total_tokens"])
    if spec.kind != "lognormal":
        raise ValueError(f"lengths of kind {spec.kind!r} come from the trace file, not a distribution")
    return spec.max_total_tokens


def sample_sharegpt(n: int, rng: np.random.Generator, correlation: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ShareGPT-like pairs; ``correlation`` overrides the table's copula correlation (what calibration fits)."""
    from scipy.special import ndtr  # 0.2 s to import: only ShareGPT draws need it

    table = sharegpt_table()
    probs = table["probabilities"]
    rho = table["copula_correlation"] if correlation is None else correlation

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        # A Gaussian copula links the two quantiles: long prompts tend to get short answers.
        z_in = rng.standard_normal(m)
        z_out = rho * z_in + np.sqrt(1.0 - rho * rho) * rng.standard_normal(m)
        i = np.interp(ndtr(z_in), probs, table["input_tokens"])
        o = np.interp(ndtr(z_out), probs, table["output_tokens"])
        return np.rint(i).astype(np.int64), np.rint(o).astype(np.int64)

    return _capped(draw, n, table["max_total_tokens"])


def _capped(draw: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int, cap: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs from ``draw``, redrawing those over the prompt+output cap (vLLM's ShareGPT sampler drops
    them)."""
    inp, out = draw(n)
    bad = np.flatnonzero(inp + out > cap)
    while bad.size:
        inp[bad], out[bad] = draw(bad.size)
        bad = bad[inp[bad] + out[bad] > cap]
    return inp, out
