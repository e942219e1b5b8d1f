"""``adaptergym/AdapterPlacement-v0``: place a workload's adapters on a pool of GPUs, one adapter per step."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from adaptergym.envs.common import (
    MAX_LORAS_LEVELS,
    Episode,
    check_servable,
    choose_episode,
    log_feature,
    mean_request_tokens,
    rank_cover,
    rank_feature,
    reference_capacity,
    slot_caps,
)
from adaptergym.envs.render import bar_chart, text_table
from adaptergym.envs.scoring import FleetScore, GpuPlan, make_scorer
from adaptergym.errors import ConfigError, InvalidAction
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.scenarios import get_scenario
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS

OBJECTIVES = ("gpus", "latency", "weighted")
GPU_FEATURES = 8
FLEET_FEATURES = 5


class AdapterPlacementEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
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

    - if any GPU is starved: ``-starved_gpus / open_gpus`` (in [-1, 0));
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
    | ``render_mode`` | str or None | None | ``"ansi"`` (a text table) or ``"rgb_array"`` (a bar chart) |

    ## Scorers

    ``scorer`` picks who judges the episode: ``"twin"`` (the Digital Twin over ``window_s``), ``"surrogate"``
    or ``"analytic"`` (fast mode), or ``"auto"``; ``adaptergym.envs.scoring`` says how each decides what a
    GPU serves and whether it starves. ``info["scorer"]`` always names the one used.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012

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
        render_mode: str | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
        if num_gpus < 1:
            raise ConfigError(f"num_gpus: {num_gpus} must be >= 1")
        budget = num_gpus if gpu_budget is None else int(gpu_budget)
        if not 1 <= budget <= num_gpus:
            raise ConfigError(f"gpu_budget: {gpu_budget} must be between 1 and num_gpus ({num_gpus})")
        levels = tuple(int(x) for x in max_loras_levels)
        if not levels or levels[0] < 1 or any(b <= a for a, b in pairwise(levels)):
            raise ConfigError(f"max_loras_levels: {max_loras_levels} must be increasing integers >= 1")
        if lookahead < 1 or not 0 <= weight <= 1 or latency_scale_ms <= 0 or invalid_action_penalty < 0:
            raise ConfigError("lookahead >= 1, 0 <= weight <= 1, latency_scale_ms > 0 and "
                              "invalid_action_penalty >= 0 are required")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode: {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.scenario = get_scenario(scenario)
        self.split = split
        self._seeds = self.scenario.seeds(split)
        self.num_gpus = int(num_gpus)
        self.gpu_budget = budget
        self.objective = objective
        self.profile = load_profile(profile)
        self.levels = np.array(levels)
        self.lookahead = int(lookahead)
        self.latency_scale_ms = float(latency_scale_ms)
        self.weight = float(weight)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.render_mode = render_mode
        self.scorer = make_scorer(scorer, self.profile, window_s, objective != "gpus")
        caps = slot_caps(self.profile, levels)
        self._caps = caps
        # Lookups by rank value (0 = empty GPU): levels that start, and the feature of the largest one.
        self._cap_of_rank = np.zeros(VLLM_MAX_LORA_RANKS[-1] + 1, np.int64)
        for rank, cap in caps.items():
            self._cap_of_rank[rank] = cap
        cap_values = np.concatenate([[0], self.levels])
        self._cap_feature = log_feature(cap_values[self._cap_of_rank]).astype(np.float32)

        g = self.num_gpus
        inf = np.inf
        self.action_space = spaces.MultiDiscrete([g, len(levels)])
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
        self._episode: Episode | None = None
        self.capacity_tok_s = float("nan")  # one GPU's saturated throughput for the episode's lengths
        self._score: FleetScore | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode = choose_episode(self.scenario, self._seeds, self.np_random, options)
        workload = episode.workload
        check_servable(workload, self._caps)
        self._episode = episode
        self.capacity_tok_s = reference_capacity(self.profile, workload.lengths)
        rates = np.array([a.rate for a in workload.adapters])
        self._order = np.argsort(-rates, kind="stable")
        ranks = np.array([a.rank for a in workload.adapters])[self._order]
        self._n = n = len(rates)
        self._loads = rates[self._order] * mean_request_tokens(workload.lengths) / self.capacity_tok_s
        self._covers = np.array([rank_cover(int(r)) for r in ranks])
        self._total_load = float(self._loads.sum())
        self._unplaced_load = np.concatenate([np.cumsum(self._loads[::-1])[::-1], [0.0]])
        total_rate = max(float(rates.sum()), 1e-12)
        self._adapter_obs = np.zeros((n + 1, 4), np.float32)
        self._adapter_obs[:n] = np.column_stack([self._loads, rank_feature(ranks), rates[self._order] / total_rate,
                                                 self._cap_feature[self._covers]])
        self._upcoming = np.zeros((n + 1 + self.lookahead, 2), np.float32)
        self._upcoming[:n] = np.column_stack([self._loads, rank_feature(ranks)])
        g = self.num_gpus
        self._gpu_count = np.zeros(g, np.int64)
        self._gpu_load = np.zeros(g)
        self._gpu_rank = np.zeros(g, np.int64)
        self._gpu_slots = np.zeros(g, np.int64)
        self._gpu_members: list[list[int]] = [[] for _ in range(g)]
        self._i = 0
        self._open = 0
        self._score = None
        self._update_mask()
        info = {"scorer": self.scorer.name, "workload_seed": episode.workload_seed, "num_adapters": n,
                "capacity_tok_s": self.capacity_tok_s, "action_mask": self._mask.copy()}
        return self._obs(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._episode is None or self._i >= self._n:
            raise ResetNeeded("the episode is over (or never started): call reset() before step()")
        gpu, level = self._check(action)
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
        self._place(gpu, level)
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
    def _check(self, action: Any) -> tuple[int, int]:
        arr = np.asarray(action)
        if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer) or not self.action_space.contains(
                arr.astype(self.action_space.dtype)):
            raise InvalidAction(f"action {action!r} is not in {self.action_space}: expected "
                                f"[gpu in 0..{self.num_gpus - 1}, level in 0..{len(self.levels) - 1}]")
        return int(arr[0]), int(arr[1])

    def _place(self, gpu: int, level: int) -> None:
        i = self._i
        if self._gpu_count[gpu] == 0:
            self._open += 1
        self._gpu_members[gpu].append(i)
        self._gpu_count[gpu] += 1
        self._gpu_load[gpu] += self._loads[i]
        self._gpu_rank[gpu] = max(self._gpu_rank[gpu], self._covers[i])
        cap = self._cap_of_rank[self._gpu_rank[gpu]]
        self._gpu_slots[gpu] = self.levels[min(level, cap - 1)]
        self._i += 1
        self._update_mask()

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

    def _finish(self) -> tuple[float, dict[str, Any]]:
        used = np.flatnonzero(self._gpu_count > 0)
        plans = [GpuPlan(tuple(int(self._order[k]) for k in self._gpu_members[gpu]), int(self._gpu_slots[gpu]),
                         int(self._gpu_rank[gpu])) for gpu in used]
        assert self._episode is not None
        score = self.scorer.score(self._episode.workload, plans, self._episode.request_seed)
        self._score = score
        n_used, n_starved = len(used), int(score.starved.sum())
        gpu_score = (self.num_gpus - n_used) / self.num_gpus
        # No latency to score (a scorer without latency, or no request finished in the window): 0.
        p99 = score.p99_ttft_ms
        latency_score = 0.0 if p99 is None else self.latency_scale_ms / (self.latency_scale_ms + p99)
        if n_starved:
            value = -n_starved / n_used
        elif self.objective == "gpus":
            value = gpu_score
        elif self.objective == "latency":
            value = latency_score
        else:
            value = self.weight * gpu_score + (1 - self.weight) * latency_score
        served_ratio = np.zeros(self.num_gpus)
        served_ratio[used] = score.served_ratio
        gpu_starved = np.zeros(self.num_gpus, bool)
        gpu_starved[used] = score.starved
        offered, served = float(score.offered_tok_s.sum()), float(score.served_tok_s.sum())
        details = {
            "scorer": score.scorer, "objective": self.objective, "score": float(value), "gpus_used": n_used,
            "starved_gpus": n_starved, "offered_tok_s": offered, "served_tok_s": served,
            "served_ratio": served / offered if offered > 0 else 1.0, "p99_ttft_ms": p99,
            "gpu_adapters": self._gpu_count.copy(), "gpu_max_loras": np.where(self._gpu_count > 0, self._gpu_slots, 0),
            "gpu_max_lora_rank": self._gpu_rank.copy(), "gpu_served_ratio": served_ratio, "gpu_starved": gpu_starved,
        }
        if score.metrics:
            details["metrics"] = score.metrics
        return float(value), details

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """``ansi``: a table of GPUs (adapters, slots, rank, load, and once scored, served and starved);
        ``rgb_array``: a bar chart of each GPU's offered and served load."""
        if self.render_mode is None or self._episode is None:
            return None
        used = np.flatnonzero(self._gpu_count > 0)
        score = self._score
        ratio = score.served_ratio if score is not None else np.full(len(used), np.nan)
        if self.render_mode == "ansi":
            rows = [[int(g), int(self._gpu_count[g]), int(self._gpu_slots[g]), int(self._gpu_rank[g]),
                     float(self._gpu_load[g]), float(ratio[k]),
                     "-" if score is None else ("yes" if score.starved[k] else "no")] for k, g in enumerate(used)]
            footer = (f"next: adapter {self._i + 1} of {self._n}" if score is None else
                      f"scored by {score.scorer}: {len(used)} GPUs, {int(score.starved.sum())} starved, "
                      + ("no p99 TTFT" if score.p99_ttft_ms is None else f"p99 TTFT {score.p99_ttft_ms:.0f} ms"))
            title = (f"{self._episode.workload.name or 'workload'}: {self._i}/{self._n} adapters placed, "
                     f"load {self._total_load:.2f} GPUs")
            return text_table(title, ["gpu", "adapters", "max_loras", "rank", "load", "served", "starved"], rows,
                              footer)
        loads = self._gpu_load[used]
        return bar_chart(f"{self._i}/{self._n} adapters placed on {len(used)} GPUs",
                         [f"GPU {g}\n{self._gpu_count[g]} ad / {self._gpu_slots[g]} sl" for g in used], loads,
                         None if score is None else loads * np.minimum(ratio, 1.0),
                         None if score is None else score.starved)
