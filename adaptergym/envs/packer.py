"""The built-in packer of ``AdapterPlacement-v1``: how many of the adapters still to place one GPU takes.

The adapters wait in a queue (the environment's packing order). For one GPU the packer asks the surrogate
(:mod:`adaptergym.surrogate`) how much load it serves, at each slot fraction the action may choose
(``max_loras`` = that fraction of the GPU's adapters, rounded up):

1. **Longest served prefix.** The first ``k`` queued adapters for every ``k`` up to :data:`REACH` GPUs' worth
   of load, all asked in one batched call (:func:`adaptergym.surrogate.features.prefix_features`): is that
   GPU predicted to serve them (:meth:`adaptergym.surrogate.Surrogate.serves`: not starved, at least 90%
   served)? The longest one that is, is the *served prefix* (none: the first adapter alone). Not the last
   before the first failure: at slot fractions below 1 a GPU of two or three adapters sharing one slot is
   often predicted starved when a larger prefix, with more slots, is not.
2. **Capacity.** The largest load at which the surrogate predicts a GPU of the served prefix's adapters
   served, their rates scaled together (:func:`adaptergym.surrogate.features.scale_load`), searched between
   the prefix's own load and :data:`CEILING` GPUs' worth on a grid of loads (:meth:`SurrogatePacker._edge`).
   So a GPU whose queue runs out before it fills still gets a capacity of its own, above what remains.
3. **Take.** With fill ``f`` the GPU takes the longest prefix whose load is at most ``f`` times that
   capacity, and at least one adapter: ``f = 1`` packs to the surrogate's edge (the published greedy's
   next-fit), below it leaves headroom, above it packs past the edge. A fill of at most 1 takes no more than
   the served prefix: every longer prefix is predicted starved (the capacity scales the served prefix's mix,
   and the adapters after it may raise the GPU's rank class, which lowers what it serves).

The capacity is measured in tokens/s; the environment divides it by one GPU's reference capacity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.surrogate import load_surrogate, regenerate_command
from adaptergym.surrogate.features import prefix_features, scale_load
from adaptergym.workload import LengthSpec

#: Prefixes asked about reach this many reference GPUs' worth of load (past any fill times any capacity).
REACH = 1.75
#: The highest capacity looked for, in reference GPUs' worth of load (one adapter alone serves about 1.1).
CEILING = 2.0
#: Loads asked per capacity, log-spaced from the served prefix's load to the ceiling (a load of 0.5 GPUs: 1.5% apart).
GRID = 96


@dataclass(frozen=True, slots=True)
class GpuOptions:
    """What the next GPU would take, per slot fraction ``s`` and fill ``f`` (the action's two indices).

    Attributes:
        capacity_tok_s: per ``s``, the surrogate's capacity of the GPU (step 2 of the module doc), tokens/s.
        served_prefix: per ``s``, adapters in the longest prefix the surrogate predicts served (0: not even one).
        take: shape (fills, slot fractions), adapters the GPU takes (at least 1).
    """

    capacity_tok_s: np.ndarray
    served_prefix: np.ndarray
    take: np.ndarray


class SurrogatePacker:
    """Fills one GPU at a time from a queue of adapters, as the surrogate of ``profile`` predicts (module doc).

    Args:
        profile: the twin profile whose surrogate is asked.
        fills: the fills an action picks from (fractions of the capacity, > 0).
        slot_fractions: the slot fractions an action picks from (in (0, 1]).
        max_slots: per vLLM ``max_lora_rank``, the largest ``max_loras`` that starts (0: none).

    Raises:
        ConfigError: no surrogate is trained for ``profile`` (the message gives the command that makes one).
    """

    def __init__(self, profile: TwinProfile, fills: Sequence[float], slot_fractions: Sequence[float],
                 max_slots: dict[int, int]) -> None:
        surrogate = load_surrogate(profile)
        if surrogate is None:
            raise ConfigError(f"profile: no surrogate ships for {profile.name!r}, and AdapterPlacement-v1's packer "
                              f"needs one; make its dataset with `{regenerate_command(profile.name)}`")
        self.surrogate = surrogate
        self.fills = np.asarray(fills, np.float64)
        self.slot_fractions = np.asarray(slot_fractions, np.float64)
        self.max_slots = max_slots

    def slots(self, fraction: float, adapters: int, cover: int) -> int:
        """``max_loras`` of a GPU of ``adapters`` adapters at slot fraction ``fraction`` (rounded up, at least 1),
        within what starts at its ``max_lora_rank`` ``cover``."""
        return max(1, min(math.ceil(fraction * adapters - 1e-9), self.max_slots[cover]))

    def options(self, rates: np.ndarray, ranks: np.ndarray, load_tok_s: np.ndarray, lengths: LengthSpec,
                reference_tok_s: float) -> GpuOptions:
        """The next GPU's options for the queue ``rates`` (req/s), ``ranks`` and ``load_tok_s`` (offered tokens/s),
        in queue order (module doc); ``reference_tok_s`` is one reference GPU's capacity (the unit of
        :data:`REACH` and :data:`CEILING`)."""
        cumulative = np.cumsum(load_tok_s)
        window = max(1, min(len(rates), int(np.searchsorted(cumulative, REACH * reference_tok_s)) + 1))
        covers = np.maximum.accumulate([rank_cover(int(r)) for r in ranks[:window]])
        slots = np.array([[self.slots(f, k, c) for f in self.slot_fractions]
                          for k, c in zip(range(1, window + 1), covers, strict=True)])
        rows = prefix_features(rates[:window], ranks[:window], slots, lengths)  # (window, fractions, features)
        fractions = len(self.slot_fractions)
        served = self.surrogate.serves(rows.reshape(window * fractions, -1)).reshape(window, fractions)
        # Longest served prefix per slot fraction (0: none).
        prefix = np.where(served.any(axis=0), window - np.argmax(served[::-1], axis=0), 0)
        longest = np.maximum(prefix, 1) - 1
        capacity = self._edge(rows[longest, np.arange(fractions)], cumulative[longest], prefix > 0,
                              CEILING * reference_tok_s)
        limit = self.fills[:, None] * capacity[None, :]
        take = np.maximum(1, np.searchsorted(cumulative[:window], limit.ravel() * (1 + 1e-9), side="right"))
        take = take.reshape(limit.shape)
        # Every prefix past the served one is predicted starved (its next adapters may raise the rank class,
        # which the served prefix's mix scaled up does not see), so a fill of at most 1 stops there.
        take = np.where((self.fills[:, None] <= 1.0) & (prefix > 0), np.minimum(take, prefix), take)
        return GpuOptions(capacity, prefix.astype(np.int64), take.astype(np.int64))

    def _edge(self, base: np.ndarray, own: np.ndarray, served: np.ndarray, ceiling: float) -> np.ndarray:
        """Per row of ``base`` (a GPU offered ``own`` tokens/s, ``served`` by the surrogate or not), the largest
        load up to which the surrogate predicts it served, its rates scaled together: the last of :data:`GRID`
        log-spaced loads before the first not served, from ``own`` (``own / 64`` if not served) to ``ceiling``
        (one model call for all rows)."""
        low = np.where(served, own, own / 64.0)
        grid = np.exp(np.linspace(np.log(low), np.log(np.maximum(ceiling, low)), GRID, axis=1))  # (rows, GRID)
        ok = self.surrogate.serves(scale_load(np.repeat(base, GRID, axis=0), (grid / own[:, None]).ravel()))
        ok = ok.reshape(grid.shape)
        first_failure = np.where(ok.all(axis=1), GRID, np.argmin(ok, axis=1))
        return grid[np.arange(len(base)), np.maximum(first_failure - 1, 0)]
