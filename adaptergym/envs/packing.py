"""``adaptergym/AdapterPlacement-v1``: fill a pool of GPUs one GPU per step, each step a packing parameter."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from adaptergym.envs.common import choose_episode, log_feature
from adaptergym.envs.packer import GpuOptions, SurrogatePacker
from adaptergym.envs.pool import GpuPoolEnv
from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import MAX_LORAS_LEVELS, rank_cover
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS

#: Default fills an action picks from: the share of the surrogate's capacity a GPU is filled to.
FILLS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05)
#: Default slot fractions an action picks from: ``max_loras`` = this share of the GPU's adapters.
SLOT_FRACTIONS = (0.5, 1.0)
OPTION_FEATURES = 3
WORKLOAD_FEATURES = 7


class PackingPlacementEnv(GpuPoolEnv):
    """Place a workload's LoRA adapters on a pool of identical GPUs, one GPU per step, by choosing how full each
    GPU is packed and how many adapter slots it gets.

    ## Description

    The task of ``AdapterPlacement-v0`` (a workload drawn from a scenario of :mod:`adaptergym.scenarios`, a
    pool of ``num_gpus`` GPUs, fewest GPUs without starvation by default) with a coarser action. The adapters
    wait in a queue, in decreasing order of the vLLM ``--max-lora-rank`` that covers them, then of request
    rate (ties by workload order; the published greedy's packing order, which keeps small ranks together).
    Each step fills the next empty GPU: a built-in packer (:mod:`adaptergym.envs.packer`) gives it the longest
    prefix of the queue whose load is at most the chosen *fill* times the GPU's capacity as the surrogate
    predicts it (at least one adapter), and sets its ``max_loras`` to the chosen *slot fraction* of its
    adapters. When the queue is empty every GPU is scored together (a fleet run of the Digital Twin, or the
    surrogate in fast mode) and the episode ends. One step is one GPU, not a span of simulated time.

    The packer needs the profile's surrogate (:func:`adaptergym.surrogate.load_surrogate`); the default
    profile ships one. An adapter sits on exactly one GPU (no replication), as in v0.

    ## Action Space

    ``MultiDiscrete([len(fills), len(slot_fractions)])``:

    | Index | Action | Values |
    |-------|--------|--------|
    | 0 | fill: the GPU takes load up to ``fills[a[0]]`` x its capacity | 0 .. len(fills)-1 |
    | 1 | slot fraction: ``max_loras = ceil(slot_fractions[a[1]] x adapters)`` | 0 .. len(slot_fractions)-1 |

    The capacity is the surrogate's, at that slot fraction: the largest load at which it predicts the GPU
    serves the longest prefix of the queue it predicts served (their rates scaled together). Fill 1 packs to
    the surrogate's edge, below 1 leaves headroom, above 1 packs past it. ``max_loras`` is at least 1 and at
    most the largest level of ``(1, 2, 4, ..., 384)`` with which vLLM starts at the GPU's ``max_lora_rank``;
    the CPU adapter cache holds all its adapters. The GPU at index ``gpu_budget - 1`` (the last one allowed)
    takes every adapter still queued, whatever the fill.

    Every action in the space is valid. ``action_masks()`` (and ``info["action_mask"]``) is all True, of length
    ``len(fills) + len(slot_fractions)``, so that mask-following agents (sb3-contrib's ``MaskablePPO``) and
    evaluators treat both placement environments alike. An action outside the action space (wrong shape, out
    of range) raises :class:`adaptergym.errors.InvalidAction`.

    ## Observation Space

    ``Dict`` of ``Box(float32)``. Loads are offered tokens/s (rate x mean prompt+output tokens of the workload's
    length distribution) divided by ``info["capacity_tok_s"]``, the saturated throughput of one GPU of the
    profile (measured once by the twin), so a load of 1 fills a reference GPU; counts are ``log2(1 + n) / 9``.
    ``F = len(fills)``, ``S = len(slot_fractions)``. All but ``"workload"`` describe the GPU the next step
    fills (zeros once the queue is empty).

    ``"capacity"``, shape ``(S * 2,)``: one row per slot fraction, flattened row by row
    (``obs["capacity"].reshape(S, 2)``):

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | the GPU's capacity, as the surrogate predicts it (load) | 0 | inf |
    | 1 | adapters in the longest prefix it predicts served, ``log2(1 + n) / 9`` | 0 | inf |

    ``"options"``, shape ``(F * S * 3,)``: one row per action, fill-major (``obs["options"].reshape(F, S, 3)``;
    row ``(f, s)`` is what action ``[f, s]`` would do):

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | load left in the queue after this GPU | 0 | inf |
    | 1 | adapters this GPU would take, ``log2(1 + n) / 9`` | 0 | inf |
    | 2 | GPUs the rest needs if each takes this fill of this capacity, ``ceil(col 0 / (fill x capacity))`` | 0 | inf |

    ``"workload"``, shape ``(7,)``:

    | Index | Observation | Min | Max |
    |-------|-------------|-----|-----|
    | 0 | load of the whole workload | 0 | inf |
    | 1 | load still queued | 0 | inf |
    | 2 | adapters still queued, ``log2(1 + n) / 9`` | 0 | inf |
    | 3 | load of the busiest queued adapter | 0 | inf |
    | 4 | share of the adapters already placed | 0 | 1 |
    | 5 | open GPUs / ``num_gpus`` | 0 | 1 |
    | 6 | GPUs still allowed (``gpu_budget`` - open) / ``num_gpus`` | 0 | 1 |

    ## Rewards

    Every step but the last: 0. The last step's reward is the episode's score, from the scorer's verdict on
    each open GPU (served and offered tokens/s after a warm-up; starved when served falls 10% or more short of
    offered, the papers' rule), exactly as in v0:

    - if any GPU is starved: ``-starvation_penalty * starved_gpus / open_gpus`` (in [-penalty, 0));
    - else, by ``objective``: ``gpus``: ``(num_gpus - open_gpus) / num_gpus``, the share of the pool left
      free; ``latency``: ``latency_scale_ms / (latency_scale_ms + p99_ttft_ms)`` for the fleet's p99 TTFT;
      ``weighted``: ``weight * gpus score + (1 - weight) * latency score``.

    ## Starting State

    ``reset`` picks the workload: ``options["workload"]`` (a ``WorkloadSpec``, a workload dict or a path to
    a workload JSON) if given, else the workload of ``options["scenario_seed"]``, else that of a seed drawn
    uniformly with ``self.np_random`` from the scenario's ``split`` seeds. The seed of the scorer's request
    draw also comes from ``self.np_random``, so ``reset(seed=s)`` fixes the whole episode (the packer is
    deterministic). All GPUs start empty.

    ## Episode End

    Termination: when the queue is empty, after at most ``gpu_budget`` steps (one per GPU opened).
    Truncation: none; ``step`` always returns ``truncated=False``.

    ## Info

    Every step: ``"action_mask"`` (all True); ``"gpu_adapters_taken"`` and ``"gpu_slots"``, the adapters and
    ``max_loras`` of the GPU just filled. ``reset`` gives ``"scorer"`` (``"twin"``, ``"surrogate"`` or
    ``"analytic"``), ``"workload_seed"`` (-1 when pinned), ``"num_adapters"``, ``"capacity_tok_s"`` and
    ``"action_mask"``. The last step adds the outcome, with v0's keys: ``"scorer"``, ``"objective"``,
    ``"score"``, ``"gpus_used"``, ``"starved_gpus"``, ``"offered_tok_s"``, ``"served_tok_s"``,
    ``"served_ratio"``, ``"p99_ttft_ms"`` (None unless the twin scored and a request finished: never NaN),
    per-GPU arrays ``"gpu_adapters"``, ``"gpu_max_loras"``, ``"gpu_max_lora_rank"``, ``"gpu_served_ratio"``,
    ``"gpu_starved"`` (GPUs in the order they were filled), and with the twin ``"metrics"``.

    ## Arguments

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | ``scenario`` | str | ``"zipf-large-v0"`` | scenario the workloads come from |
    | ``split`` | str | ``"train"`` | scenario seeds to draw from: ``"train"`` or ``"test"`` |
    | ``num_gpus`` | int | 8 | GPUs in the pool (the ``gpus`` score's scale) |
    | ``objective`` | str | ``"gpus"`` | ``"gpus"``, ``"latency"`` or ``"weighted"`` (see Rewards) |
    | ``gpu_budget`` | int or None | None | GPUs that may be used (None: ``num_gpus``) |
    | ``scorer`` | str | ``"auto"`` | ``"auto"``, ``"twin"``, ``"surrogate"`` or ``"analytic"`` (v0's Scorers) |
    | ``profile`` | str or TwinProfile | None | twin profile (None: the default H100 / Llama-3.1-8B) |
    | ``window_s`` | float | 120.0 | simulated seconds the twin scores (the first 20% are warm-up) |
    | ``fills`` | tuple of float | ``(0.6, 0.7, 0.75, ..., 1.05)`` | the fills an action picks from (> 0, increasing) |
    | ``slot_fractions`` | tuple of float | ``(0.5, 1.0)`` | the slot fractions (in (0, 1], increasing) |
    | ``latency_scale_ms`` | float | 1000.0 | p99 TTFT that scores 0.5 in the latency score |
    | ``weight`` | float | 0.5 | weight of the GPU score in ``weighted`` |
    | ``starvation_penalty`` | float | 1.0 | scale of the score of a starved placement (see Rewards) |
    | ``render_mode`` | str or None | None | ``"ansi"`` (a text table) or ``"rgb_array"`` (a bar chart) |

    ## Version History

    - v1: one GPU per step, filled by the surrogate-driven packer; the action is a fill and a slot fraction
      (v0: one adapter per step, the action is its GPU and that GPU's ``max_loras``).
    - v0: see :class:`adaptergym.envs.placement.AdapterPlacementEnv`.
    """

    def __init__(
        self,
        scenario: str = "zipf-large-v0",
        split: str = "train",
        num_gpus: int = 8,
        objective: str = "gpus",
        gpu_budget: int | None = None,
        scorer: str = "auto",
        profile: str | TwinProfile | None = None,
        window_s: float = 120.0,
        fills: tuple[float, ...] = FILLS,
        slot_fractions: tuple[float, ...] = SLOT_FRACTIONS,
        latency_scale_ms: float = 1000.0,
        weight: float = 0.5,
        starvation_penalty: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        fills, slot_fractions = tuple(float(f) for f in fills), tuple(float(s) for s in slot_fractions)
        if not fills or fills[0] <= 0 or any(b <= a for a, b in pairwise(fills)):
            raise ConfigError(f"fills: {fills} must be increasing and > 0, e.g. (0.8, 0.9, 1.0)")
        if (not slot_fractions or slot_fractions[0] <= 0 or slot_fractions[-1] > 1
                or any(b <= a for a, b in pairwise(slot_fractions))):
            raise ConfigError(f"slot_fractions: {slot_fractions} must be increasing and in (0, 1], e.g. (0.5, 1.0)")
        super().__init__(scenario=scenario, split=split, num_gpus=num_gpus, objective=objective,
                         gpu_budget=gpu_budget, scorer=scorer, profile=profile, window_s=window_s,
                         max_loras_levels=MAX_LORAS_LEVELS, latency_scale_ms=latency_scale_ms, weight=weight,
                         starvation_penalty=starvation_penalty, render_mode=render_mode)
        self.fills, self.slot_fractions = fills, slot_fractions
        self.packer = SurrogatePacker(self.profile, fills, slot_fractions,
                                      {r: int(self._max_slots_of_rank[r]) for r in VLLM_MAX_LORA_RANKS})
        f, s = len(fills), len(slot_fractions)
        self.action_space = spaces.MultiDiscrete([f, s])
        self.observation_space = spaces.Dict({
            "capacity": _box(s * 2),
            "options": _box(f * s * OPTION_FEATURES),
            "workload": spaces.Box(np.zeros(WORKLOAD_FEATURES, np.float32),
                                   np.array([np.inf] * 4 + [1, 1, 1], np.float32), dtype=np.float32),
        })
        self._mask = np.ones(f + s, bool)
        self._options: GpuOptions | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode = choose_episode(self.scenario, self._seeds, self.np_random, options)
        adapters = episode.workload.adapters
        covers = np.array([rank_cover(a.rank) for a in adapters])
        self._begin(episode, np.lexsort((-np.array([a.rate for a in adapters]), -covers)))
        self._busiest = np.concatenate([np.maximum.accumulate(self._loads[::-1])[::-1], [0.0]])
        self._plan_next()
        info = {"scorer": self.scorer.name, "workload_seed": episode.workload_seed, "num_adapters": self._n,
                "capacity_tok_s": self.capacity_tok_s, "action_mask": self._mask.copy()}
        return self._obs(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._episode is None or self._options is None:
            raise ResetNeeded("the episode is over (or never started): call reset() before step()")
        fill, fraction = self._check(action, f"[fill in 0..{len(self.fills) - 1}, slot fraction in "
                                              f"0..{len(self.slot_fractions) - 1}]")
        gpu, count = self._open, int(self._options.take[fill, fraction])
        cover = int(self._covers[self._i: self._i + count].max())
        self._add(gpu, count, self.packer.slots(self.slot_fractions[fraction], count, cover))
        info: dict[str, Any] = {"gpu_adapters_taken": count, "gpu_slots": int(self._gpu_slots[gpu])}
        reward, done = 0.0, self._i == self._n
        if done:
            self._options = None
            reward, details = self._finish()
            info.update(details)
        else:
            self._plan_next()
        info["action_mask"] = self._mask.copy()
        return self._obs(), reward, done, False, info

    def action_masks(self) -> np.ndarray:
        """All True: every action in the space is valid (fills then slot fractions, as ``MaskablePPO`` expects)."""
        return self._mask.copy()

    # ------------------------------------------------------------------ internals
    def _plan_next(self) -> None:
        """The packer's options for the next GPU; the last GPU allowed takes the whole queue."""
        i = self._i
        options = self.packer.options(self._rates[i:], self._ranks[i:], self._loads[i:] * self.capacity_tok_s,
                                      self._episode.workload.lengths, self.capacity_tok_s)  # type: ignore[union-attr]
        if self._open == self.gpu_budget - 1:
            options = GpuOptions(options.capacity_tok_s, options.served_prefix,
                                 np.full_like(options.take, self._n - i))
        self._options = options

    def _obs(self) -> dict[str, np.ndarray]:
        i, options = self._i, self._options
        f, s = len(self.fills), len(self.slot_fractions)
        if options is None:
            capacity, table = np.zeros(s * 2, np.float32), np.zeros(f * s * OPTION_FEATURES, np.float32)
        else:
            gpu = options.capacity_tok_s / self.capacity_tok_s
            capacity = np.column_stack([gpu, log_feature(options.served_prefix)]).astype(np.float32).ravel()
            left = self._unplaced_load[np.minimum(i + options.take, self._n)]
            later = np.ceil(left / (np.asarray(self.fills)[:, None] * gpu[None, :]) - 1e-9)  # GPUs after this one
            table = np.stack([left, log_feature(options.take), later], axis=-1).astype(np.float32).ravel()
        workload = np.array([self._total_load, self._unplaced_load[i], log_feature(self._n - i), self._busiest[i],
                             i / self._n, self._open / self.num_gpus, (self.gpu_budget - self._open) / self.num_gpus],
                            np.float32)
        return {"capacity": capacity, "options": table, "workload": workload}


def _box(size: int) -> spaces.Box:
    """Non-negative features without an upper bound (loads, log counts), float32."""
    return spaces.Box(np.zeros(size, np.float32), np.full(size, np.inf, np.float32), dtype=np.float32)
