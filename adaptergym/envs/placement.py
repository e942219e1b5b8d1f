"""``adaptergym/AdapterPlacement-v0``: place a workload's adapters on a pool of GPUs, one adapter per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from adaptergym.envs.common import choose_episode, log_feature, rank_feature
from adaptergym.envs.pool import GpuPoolEnv
from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import MAX_LORAS_LEVELS

GPU_FEATURES = 8
FLEET_FEATURES = 5


class AdapterPlacementEnv(GpuPoolEnv):
    """Place every LoRA adapter of a workload on a pool of identical GPUs and set each GPU's ``max_loras``.

    ## Description

    An episode is one workload (adapters with request rates and ranks, drawn from a scenario of
    :mod:`adaptergym.scenarios`) and a pool of ``num_gpus`` GPUs, each a vLLM server of the profile's GPU and
    model. Adapters come one per step, in order of decreasing request rate (ties by workload order); the agent
    puts the current adapter on a GPU and sets that GPU's ``max_loras`` (GPU adapter slots). When the last
    adapter is placed, every GPU that received an adapter is scored together (a fleet run of the Digital
    Twin, or the surrogate in fast mode) and the episode ends. One step is one placement decision, not a span
    of simulated time.

    ## Action Space

    ``MultiDiscrete([num_gpus, len(max_loras_levels)])``:

    | Index | Action | Values |
    |-------|--------|--------|
    | 0 | GPU that gets the current adapter | 0 .. num_gpus-1 |
    | 1 | ``max_loras`` of that GPU, as an index into ``max_loras_levels`` | 0 .. len(levels)-1 |

    The GPU's ``max_loras`` is set by the last adapter placed on it (last write wins), and is at most the
    largest level with which vLLM starts given the GPU's ``max_lora_rank`` (the smallest vLLM rank covering
    its adapters): a larger choice is lowered to that level. Each GPU's CPU adapter cache holds all its
    adapters (``max_cpu_loras`` = its adapter count, at least ``max_loras``).

    ``action_masks()`` returns the valid choices as one boolean array of length ``num_gpus +
    len(max_loras_levels)`` (the two components concatenated, as sb3-contrib's ``MaskablePPO`` expects;
    ``info["action_mask"]`` holds the same). A GPU is masked when it is beyond ``gpu_budget``, when it is
    empty and a lower-indexed GPU is empty too (GPUs are identical, so only the first empty GPU is offered:
    placements that differ by relabelling GPUs are the same placement), or when the adapter's rank would keep
    it from starting even with one slot. A level is masked when vLLM cannot start with it at the current
    adapter's own rank (it exceeds the profile's memory whatever the GPU).

    Invalid actions never raise: a masked GPU is replaced by the lowest-indexed valid GPU, a masked level by
    the largest valid one; each costs ``invalid_action_penalty`` on that step's reward and is described in
    ``info["invalid_action"]`` (empty when the action was valid). An action outside the action space (wrong
    shape, out of range) raises :class:`adaptergym.errors.InvalidAction`.

    ## Observation Space

    ``Dict`` of ``Box(float32)``. Loads are offered tokens/s (rate x mean prompt+output tokens of the
    workload's length distribution) divided by ``info["capacity_tok_s"]``, the saturated throughput of one
    GPU of the profile (measured once by the twin), so a load of 1 fills a GPU. Counts and slots are
    ``log2(1 + x) / 9``, ranks ``log2(rank) / 9`` (rank 8: 0.33, 16: 0.44, 32: 0.56, 512: 1).

    ``"gpus"``, shape ``(num_gpus * 8,)``: a table of one row per GPU, flattened row by row (GPU ``g``, column
    ``c`` is entry ``8 * g + c``; ``obs["gpus"].reshape(num_gpus, 8)`` gives the table back):

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | open: 1 if it has at least one adapter | 0 | 1 |
    | 1 | allowed: 1 if the current adapter may go there (the GPU part of the mask) | 0 | 1 |
    | 2 | load of its adapters (fraction of one GPU's capacity) | 0 | inf |
    | 3 | adapters on it, ``log2(1 + n) / 9`` | 0 | 1 |
    | 4 | its ``max_lora_rank``, ``log2(rank) / 9`` (0 when empty) | 0 | 1 |
    | 5 | its ``max_loras``, ``log2(1 + slots) / 9`` (0 when empty) | 0 | 1 |
    | 6 | share of its adapters that fit in its slots, ``min(1, max_loras / n)`` (0 when empty) | 0 | 1 |
    | 7 | largest ``max_loras`` it could start with if the current adapter joined, ``log2(1 + slots) / 9`` | 0 | 1 |

    ``"adapter"``, shape ``(4,)``, the adapter to place now (zeros once all are placed):

    | Index | Observation | Min | Max |
    |-------|-------------|-----|-----|
    | 0 | its load (fraction of one GPU's capacity) | 0 | inf |
    | 1 | its rank, ``log2(rank) / 9`` | 0 | 1 |
    | 2 | its share of the workload's request rate | 0 | 1 |
    | 3 | largest ``max_loras`` that starts at its rank, ``log2(1 + slots) / 9`` | 0 | 1 |

    ``"upcoming"``, shape ``(lookahead * 2,)``: load and ``log2(rank) / 9`` of each of the next ``lookahead``
    adapters, flattened the same way (zeros past the end).

    ``"fleet"``, shape ``(5,)``:

    | Index | Observation | Min | Max |
    |-------|-------------|-----|-----|
    | 0 | load of the whole workload (in GPUs' worth) | 0 | inf |
    | 1 | load not yet placed, the current adapter included | 0 | inf |
    | 2 | share of adapters not yet placed, the current adapter included | 0 | 1 |
    | 3 | open GPUs / ``num_gpus`` | 0 | 1 |
    | 4 | ``gpu_budget`` / ``num_gpus`` | 0 | 1 |

    ## Rewards

    Every step but the last: ``-invalid_action_penalty`` if the action was invalid, else 0. The last step
    adds the episode's score, from the scorer's verdict on each open GPU (served and offered tokens/s after
    a warm-up; starved when served falls 10% or more short of offered, the papers' rule):

    - if any GPU is starved: ``-starvation_penalty * starved_gpus / open_gpus`` (in [-penalty, 0));
    - else, by ``objective``: ``gpus``: ``(num_gpus - open_gpus) / num_gpus``, the share of the pool left
      free; ``latency``: ``latency_scale_ms / (latency_scale_ms + p99_ttft_ms)`` for the fleet's p99 TTFT;
      ``weighted``: ``weight * gpus score + (1 - weight) * latency score``.

    So every placement without starvation scores at least 0 and every starved one below 0.

    ## Starting State

    ``reset`` picks the workload: ``options["workload"]`` (a ``WorkloadSpec``, a workload dict or a path to
    a workload JSON) if given, else the workload of ``options["scenario_seed"]``, else that of a seed drawn
    uniformly with ``self.np_random`` from the scenario's ``split`` seeds. The seed of the scorer's request
    draw also comes from ``self.np_random``, so ``reset(seed=s)`` fixes the whole episode. All GPUs start
    empty.

    ## Episode End

    Termination: after the last adapter is placed (an episode of ``n`` adapters has exactly ``n`` steps).
    Truncation: none; ``step`` always returns ``truncated=False``.

    ## Info

    Every step: ``"invalid_action"`` (str), ``"action_mask"`` (the mask for the next step). ``reset`` adds
    ``"scorer"`` (which scorer will score: ``"twin"``, ``"surrogate"`` or ``"analytic"``), ``"workload_seed"`` (-1
    when pinned), ``"num_adapters"``, ``"capacity_tok_s"``. The last step adds ``"scorer"``, ``"objective"``,
    ``"score"`` (the reward without penalties), ``"gpus_used"``, ``"starved_gpus"``, ``"offered_tok_s"``,
    ``"served_tok_s"``, ``"served_ratio"``, ``"p99_ttft_ms"`` (None unless the twin scored and a request
    finished: never NaN), per-GPU arrays ``"gpu_adapters"``, ``"gpu_max_loras"``, ``"gpu_max_lora_rank"``,
    ``"gpu_served_ratio"`` (0 for empty GPUs), ``"gpu_starved"``, and with the twin ``"metrics"``, the twin's
    fleet metrics over the window (undefined ones None).

    ## Arguments

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | ``scenario`` | str | ``"zipf-large-v0"`` | scenario the workloads come from |
    | ``split`` | str | ``"train"`` | scenario seeds to draw from: ``"train"`` or ``"test"`` |
    | ``num_gpus`` | int | 8 | GPUs in the pool (fixes the spaces) |
    | ``objective`` | str | ``"gpus"`` | ``"gpus"``, ``"latency"`` or ``"weighted"`` (see Rewards) |
    | ``gpu_budget`` | int or None | None | GPUs that may be used (None: ``num_gpus``) |
    | ``scorer`` | str | ``"auto"`` | ``"auto"``, ``"twin"``, ``"surrogate"`` or ``"analytic"`` (see Scorers) |
    | ``profile`` | str or TwinProfile | None | twin profile (None: the default H100 / Llama-3.1-8B) |
    | ``window_s`` | float | 120.0 | simulated seconds the twin scores (the first 20% are warm-up) |
    | ``max_loras_levels`` | tuple of int | ``(1, 2, 4, ..., 384)`` | the ``max_loras`` values an action picks from |
    | ``lookahead`` | int | 8 | upcoming adapters shown in the observation |
    | ``latency_scale_ms`` | float | 1000.0 | p99 TTFT that scores 0.5 in the latency score |
    | ``weight`` | float | 0.5 | weight of the GPU score in ``weighted`` |
    | ``invalid_action_penalty`` | float | 0.1 | cost of one invalid action |
    | ``starvation_penalty`` | float | 1.0 | scale of the score of a starved placement (see Rewards) |
    | ``render_mode`` | str or None | None | ``"ansi"`` (a text table) or ``"rgb_array"`` (a bar chart) |

    ## Scorers

    ``scorer`` picks who judges the episode: ``"twin"`` (the Digital Twin over ``window_s``), ``"surrogate"``
    or ``"analytic"`` (fast mode), or ``"auto"``; ``adaptergym.scoring`` says how each decides what a
    GPU serves and whether it starves. ``info["scorer"]`` always names the one used.

    ## Version History

    - v0: initial version (``starvation_penalty`` added later; its default keeps the original rewards).
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
        max_loras_levels: tuple[int, ...] = MAX_LORAS_LEVELS,
        lookahead: int = 8,
        latency_scale_ms: float = 1000.0,
        weight: float = 0.5,
        invalid_action_penalty: float = 0.1,
        starvation_penalty: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        if lookahead < 1 or invalid_action_penalty < 0:
            raise ConfigError(f"lookahead ({lookahead}) must be >= 1 and invalid_action_penalty "
                              f"({invalid_action_penalty}) >= 0")
        super().__init__(scenario=scenario, split=split, num_gpus=num_gpus, objective=objective,
                         gpu_budget=gpu_budget, scorer=scorer, profile=profile, window_s=window_s,
                         max_loras_levels=max_loras_levels, latency_scale_ms=latency_scale_ms, weight=weight,
                         starvation_penalty=starvation_penalty, render_mode=render_mode)
        self.lookahead = int(lookahead)
        self.invalid_action_penalty = float(invalid_action_penalty)
        g, levels = self.num_gpus, len(self.levels)
        inf = np.inf
        self.action_space = spaces.MultiDiscrete([g, levels])
        self.observation_space = spaces.Dict({
            "gpus": spaces.Box(np.zeros(g * GPU_FEATURES, np.float32),
                               np.tile(np.array([1, 1, inf, 1, 1, 1, 1, 1], np.float32), g), dtype=np.float32),
            "adapter": spaces.Box(np.zeros(4, np.float32), np.array([inf, 1, 1, 1], np.float32), dtype=np.float32),
            "upcoming": spaces.Box(np.zeros(self.lookahead * 2, np.float32),
                                   np.tile(np.array([inf, 1], np.float32), self.lookahead), dtype=np.float32),
            "fleet": spaces.Box(np.zeros(FLEET_FEATURES, np.float32), np.array([inf, inf, 1, 1, 1], np.float32),
                                dtype=np.float32),
        })
        self._gpu_index = np.arange(g)

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode = choose_episode(self.scenario, self._seeds, self.np_random, options)
        rates = np.array([a.rate for a in episode.workload.adapters])
        self._begin(episode, np.argsort(-rates, kind="stable"))
        n = self._n
        total_rate = max(float(self._rates.sum()), 1e-12)
        self._adapter_obs = np.zeros((n + 1, 4), np.float32)
        self._adapter_obs[:n] = np.column_stack([self._loads, rank_feature(self._ranks), self._rates / total_rate,
                                                 self._cap_feature[self._covers]])
        self._upcoming = np.zeros((n + 1 + self.lookahead, 2), np.float32)
        self._upcoming[:n] = np.column_stack([self._loads, rank_feature(self._ranks)])
        self._update_mask()
        info = {"scorer": self.scorer.name, "workload_seed": episode.workload_seed, "num_adapters": n,
                "capacity_tok_s": self.capacity_tok_s, "action_mask": self._mask.copy()}
        return self._obs(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._episode is None or self._i >= self._n:
            raise ResetNeeded("the episode is over (or never started): call reset() before step()")
        gpu, level = self._check(action, f"[gpu in 0..{self.num_gpus - 1}, level in 0..{len(self.levels) - 1}]")
        penalty, notes = 0.0, []
        if not self._gpu_ok[gpu]:
            valid = int(np.flatnonzero(self._gpu_ok)[0])
            notes.append(f"GPU {gpu} is masked for this adapter; placed on GPU {valid}")
            gpu, penalty = valid, penalty + self.invalid_action_penalty
        own_cap = self._cap_of_rank[self._covers[self._i]]
        if level >= own_cap:
            notes.append(f"max_loras {self.levels[level]} does not start at rank {self._covers[self._i]}; "
                         f"set to {self.levels[own_cap - 1]}")
            level, penalty = int(own_cap - 1), penalty + self.invalid_action_penalty
        self._add(gpu, 1, int(self.levels[level]))
        self._update_mask()
        info: dict[str, Any] = {"invalid_action": "; ".join(notes)}
        reward = 0.0 - penalty
        if self._i == self._n:
            score, details = self._finish()
            reward += score
            info.update(details)
        info["action_mask"] = self._mask.copy()
        return self._obs(), reward, self._i == self._n, False, info

    def action_masks(self) -> np.ndarray:
        """Valid choices for the next step: ``num_gpus`` GPU flags then one flag per ``max_loras`` level
        (all True once the episode is over, when no action is taken)."""
        return self._mask.copy()

    # ------------------------------------------------------------------ internals
    def _update_mask(self) -> None:
        levels = len(self.levels)
        if self._i >= self._n:
            self._gpu_ok = np.ones(self.num_gpus, bool)
            self._join_rank = self._gpu_rank
            self._mask = np.ones(self.num_gpus + levels, bool)
            return
        cover = self._covers[self._i]
        self._join_rank = np.maximum(self._gpu_rank, cover)
        self._gpu_ok = ((self._gpu_index < self.gpu_budget) & (self._gpu_index <= self._open)
                        & (self._cap_of_rank[self._join_rank] > 0))
        self._mask = np.concatenate([self._gpu_ok, np.arange(levels) < self._cap_of_rank[cover]])

    def _obs(self) -> dict[str, np.ndarray]:
        count = self._gpu_count
        opened = count > 0
        gpus = np.column_stack([
            opened, self._gpu_ok & (self._i < self._n), self._gpu_load, log_feature(count),
            rank_feature(self._gpu_rank), np.where(opened, log_feature(self._gpu_slots), 0.0),
            np.where(opened, np.minimum(self._gpu_slots, count) / np.maximum(count, 1), 0.0),
            self._cap_feature[self._join_rank] if self._i < self._n else np.zeros(self.num_gpus),
        ]).astype(np.float32)
        i = self._i
        fleet = np.array([self._total_load, self._unplaced_load[i], (self._n - i) / self._n,
                          self._open / self.num_gpus, self.gpu_budget / self.num_gpus], np.float32)
        return {"gpus": gpus.ravel(), "adapter": self._adapter_obs[i].copy(),
                "upcoming": self._upcoming[i + 1: i + 1 + self.lookahead].flatten(), "fleet": fleet}
