"""Per-GPU features the surrogate models read: what a set of adapters offers one GPU, and its slot setting.

Every feature is a function of (rates, ranks, max_loras, lengths) alone, so the same row describes a sweep
point, a candidate set of a placement policy or a real run. Why each is there:

| feature | why |
|---|---|
| ``num_adapters`` | adapters competing for slots |
| ``max_loras`` | GPU slots: adapter swaps below, KV memory taken above |
| ``slot_coverage`` | ``min(max_loras, n) / n``: share of adapters that fit in the slots at once |
| ``slot_rate_share`` | share of the load from the ``max_loras`` busiest adapters (how often LRU slots swap) |
| ``total_rate`` | requests/s offered |
| ``offered_tok_s`` | prompt + output tokens/s offered (total_rate x mean request tokens) |
| ``mean_input_tokens``, ``mean_output_tokens`` | request shape: prefill vs decode work, KV held |
| ``max_rate`` | the busiest adapter, req/s |
| ``effective_adapters`` | ``(sum r)^2 / sum r^2``: how many adapters carry the load (Zipf vs uniform) |
| ``max_rank``, ``max_lora_rank`` | largest rank, and the vLLM ``--max-lora-rank`` covering it (slot size) |
| ``mean_rank``, ``rate_weighted_rank`` | LoRA compute per adapter, per request |
"""

from __future__ import annotations

import numpy as np

from adaptergym.server_capacity import mean_lengths, rank_cover
from adaptergym.workload import LengthSpec

FEATURES = (
    "num_adapters", "max_loras", "slot_coverage", "slot_rate_share", "total_rate", "offered_tok_s",
    "mean_input_tokens", "mean_output_tokens", "max_rate", "effective_adapters", "max_rank", "max_lora_rank",
    "mean_rank", "rate_weighted_rank",
)
COLUMN = {name: i for i, name in enumerate(FEATURES)}
#: The features proportional to the offered load (every rate times c: these times c, the others unchanged).
LOAD_FEATURES = ("total_rate", "offered_tok_s", "max_rate")


def gpu_features(rates: np.ndarray, ranks: np.ndarray, max_loras: int | np.ndarray,
                 lengths: LengthSpec) -> np.ndarray:
    """Features (:data:`FEATURES` order) of one GPU serving adapters of ``rates`` (req/s) and ``ranks``.

    Args:
        rates: per-adapter arrival rates, req/s, shape (n,).
        ranks: per-adapter LoRA ranks, shape (n,).
        max_loras: the GPU's slot count; an array of k levels gives k rows at once.
        lengths: the workload's prompt/output length distribution.

    Returns:
        shape (len(FEATURES),) for an int ``max_loras``, (k, len(FEATURES)) for an array of k levels.
    """
    rates = np.asarray(rates, np.float64)
    ranks = np.asarray(ranks, np.float64)
    levels = np.atleast_1d(np.asarray(max_loras, np.float64))
    n = rates.size
    prompt, output = mean_lengths(lengths)
    total = float(rates.sum())
    busiest = np.concatenate([[0.0], np.cumsum(np.sort(rates)[::-1])])
    in_slots = np.minimum(levels, n).astype(np.int64)
    max_rank = int(ranks.max()) if n else 0
    per_level = {
        "max_loras": levels,
        "slot_coverage": in_slots / n if n else 1.0,
        "slot_rate_share": busiest[in_slots] / total if total > 0 else 1.0,
    }
    shared = {
        "num_adapters": n,
        "total_rate": total,
        "offered_tok_s": total * (prompt + output),
        "mean_input_tokens": prompt,
        "mean_output_tokens": output,
        "max_rate": float(rates.max()) if n else 0.0,
        "effective_adapters": total**2 / float((rates**2).sum()) if total > 0 else 0.0,
        "max_rank": max_rank,
        "max_lora_rank": rank_cover(max_rank) if n else 0,
        "mean_rank": float(ranks.sum()) / n if n else 0.0,
        "rate_weighted_rank": float(rates @ ranks) / total if total > 0 else 0.0,
    }
    rows = np.empty((levels.size, len(FEATURES)))
    rows[:] = [shared.get(name, 0.0) for name in FEATURES]
    for name, column in per_level.items():
        rows[:, COLUMN[name]] = column
    return rows[0] if np.ndim(max_loras) == 0 else rows


def prefix_features(rates: np.ndarray, ranks: np.ndarray, max_loras: np.ndarray, lengths: LengthSpec) -> np.ndarray:
    """The :func:`gpu_features` of every prefix of a queue of adapters, in one vectorised pass: row ``[k - 1, j]``
    is ``gpu_features(rates[:k], ranks[:k], max_loras[k - 1, j], lengths)`` (``tests/test_surrogate.py`` checks
    they agree).

    Args:
        rates: the queue's arrival rates, req/s, shape (n,), n >= 1.
        ranks: its LoRA ranks, shape (n,).
        max_loras: slot counts, shape (n, j): ``j`` levels for each prefix.
        lengths: the workload's prompt/output length distribution.

    Returns:
        shape (n, j, len(FEATURES)).
    """
    rates = np.asarray(rates, np.float64)
    ranks = np.asarray(ranks, np.float64)
    levels = np.asarray(max_loras, np.float64)
    n = np.arange(1, rates.size + 1)
    prompt, output = mean_lengths(lengths)
    total = np.cumsum(rates)
    rate = np.where(total > 0, total, np.inf)  # an idle prefix: the rate shares below are 0
    # Row k of the triangle holds the first k + 1 rates, sorted decreasing: the busiest of each prefix.
    triangle = np.sort(np.tril(np.broadcast_to(rates, (rates.size, rates.size))), axis=1)[:, ::-1]
    busiest = np.concatenate([np.zeros((rates.size, 1)), np.cumsum(triangle, axis=1)], axis=1)
    in_slots = np.minimum(levels, n[:, None]).astype(np.int64)
    max_rank = np.maximum.accumulate(ranks)
    per_prefix = {
        "num_adapters": n,
        "total_rate": total,
        "offered_tok_s": total * (prompt + output),
        "mean_input_tokens": prompt,
        "mean_output_tokens": output,
        "max_rate": np.maximum.accumulate(rates),
        "effective_adapters": total * total / np.where(total > 0, np.cumsum(rates**2), 1.0),
        "max_rank": max_rank,
        "max_lora_rank": [rank_cover(int(r)) for r in max_rank],
        "mean_rank": np.cumsum(ranks) / n,
        "rate_weighted_rank": np.cumsum(rates * ranks) / rate,
    }
    rows = np.empty((*levels.shape, len(FEATURES)))
    for name, values in per_prefix.items():
        rows[..., COLUMN[name]] = np.reshape(values, (-1, 1))
    rows[..., COLUMN["max_loras"]] = levels
    rows[..., COLUMN["slot_coverage"]] = in_slots / n[:, None]
    rows[..., COLUMN["slot_rate_share"]] = np.where(total[:, None] > 0, np.take_along_axis(busiest, in_slots, axis=1)
                                                     / rate[:, None], 1.0)
    return rows


def scale_load(rows: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Feature rows of the same GPUs with every adapter's rate multiplied by ``factor`` (a scalar, or one per
    row): what :func:`gpu_features` gives for ``rates * factor``, without building the rows again.

    Args:
        rows: feature rows, shape (n, len(FEATURES)).
        factor: rate multiplier(s), > 0.

    Returns:
        a new array of the same shape.
    """
    scaled = np.array(rows, np.float64, copy=True, ndmin=2)
    columns = [COLUMN[name] for name in LOAD_FEATURES]
    scaled[:, columns] *= np.asarray(factor, np.float64).reshape(-1, 1)
    return scaled
