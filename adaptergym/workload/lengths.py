"""Prompt/output length distributions: ShareGPT-like, fixed, lognormal."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import numpy as np

from adaptergym.workload.spec import LengthSpec


@cache
def _sharegpt_table() -> dict:
    return json.loads(resources.files("adaptergym.data").joinpath("sharegpt_lengths.json").read_text())


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` (input_tokens, output_tokens) pairs as int64 arrays."""
    if spec.kind == "fixed":
        return np.full(n, spec.input_tokens, np.int64), np.full(n, spec.output_tokens, np.int64)
    if spec.kind == "sharegpt":
        table = _sharegpt_table()
        probs = table["probabilities"]

        def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
            i = np.interp(rng.random(m), probs, table["input_tokens"])
            o = np.interp(rng.random(m), probs, table["output_tokens"])
            return np.rint(i).astype(np.int64), np.rint(o).astype(np.int64)

        cap = table["max_total_tokens"]
    elif spec.kind == "lognormal":

        def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
            i = rng.lognormal(np.log(spec.input_median), spec.input_sigma, m)
            o = rng.lognormal(np.log(spec.output_median), spec.output_sigma, m)
            i = np.clip(np.rint(i), 1, spec.max_input_tokens)
            return i.astype(np.int64), np.maximum(np.rint(o), 1).astype(np.int64)

        cap = spec.max_total_tokens
    else:
        raise ValueError(f"lengths of kind {spec.kind!r} come from the trace file, not a distribution")
    inp, out = draw(n)
    # Resample pairs over the prompt+output cap, as vLLM's ShareGPT sampler filters them out.
    bad = np.flatnonzero(inp + out > cap)
    while bad.size:
        inp[bad], out[bad] = draw(bad.size)
        bad = bad[inp[bad] + out[bad] > cap]
    return inp, out
