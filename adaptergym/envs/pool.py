"""What the placement environments share: a pool of identical GPUs filled during an episode, scored at its end.

:class:`GpuPoolEnv` is not registered: ``AdapterPlacement-v0`` (one adapter per step,
:mod:`adaptergym.envs.placement`) and ``AdapterPlacement-v1`` (one GPU per step, :mod:`adaptergym.envs.packing`)
build on it. It checks the common arguments, lays out an episode's adapters in the order they are placed,
keeps each GPU's adapters, load, rank and slots, turns the scorer's verdict into the reward and the last
step's ``info``, and renders the pool.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from adaptergym.envs.common import Episode, check_servable, log_feature
from adaptergym.envs.render import bar_chart, text_table
from adaptergym.errors import ConfigError, InvalidAction
from adaptergym.placement import GpuAssignment, Placement
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.scenarios import get_scenario
from adaptergym.scoring import FleetScore, GpuPlan, make_scorer
from adaptergym.server_capacity import mean_request_tokens, rank_cover, reference_capacity, slot_caps
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS

OBJECTIVES = ("gpus", "latency", "weighted")


class GpuPoolEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Base of the placement environments (their docstrings are the specification).

    Subclasses set ``action_space`` and ``observation_space``, call :meth:`_begin` in ``reset`` with the order
    in which adapters will be placed, :meth:`_add` to put the next adapters of that order on a GPU, and
    :meth:`_finish` after the last one.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(self, *, scenario: str, split: str, num_gpus: int, objective: str, gpu_budget: int | None,
                 scorer: str, profile: str | TwinProfile | None, window_s: float, max_loras_levels: tuple[int, ...],
                 latency_scale_ms: float, weight: float, starvation_penalty: float,
                 render_mode: str | None) -> None:
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
        if not 0 <= weight <= 1 or latency_scale_ms <= 0 or starvation_penalty <= 0:
            raise ConfigError("0 <= weight <= 1, latency_scale_ms > 0 and starvation_penalty > 0 are required")
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
        self.latency_scale_ms = float(latency_scale_ms)
        self.weight = float(weight)
        self.starvation_penalty = float(starvation_penalty)
        self.render_mode = render_mode
        self.scorer = make_scorer(scorer, self.profile, window_s, objective != "gpus")
        caps = slot_caps(self.profile, levels)
        self._caps = caps
        # Lookups by rank value (0 = empty GPU): how many levels start, and the largest that does.
        self._cap_of_rank = np.zeros(VLLM_MAX_LORA_RANKS[-1] + 1, np.int64)
        for rank, cap in caps.items():
            self._cap_of_rank[rank] = cap
        cap_values = np.concatenate([[0], self.levels])
        self._max_slots_of_rank = cap_values[self._cap_of_rank]
        self._cap_feature = log_feature(self._max_slots_of_rank).astype(np.float32)
        self._episode: Episode | None = None
        self.capacity_tok_s = float("nan")  # one GPU's saturated throughput for the episode's lengths
        self._score: FleetScore | None = None

    # ------------------------------------------------------------------ episode state
    def _begin(self, episode: Episode, order: np.ndarray) -> None:
        """Start ``episode``: its adapters will be placed in ``order`` (indices into the workload's adapters)."""
        workload = episode.workload
        check_servable(workload, self._caps)
        self._episode = episode
        self.capacity_tok_s = reference_capacity(self.profile, workload.lengths)
        self._order = order
        self._rates = np.array([a.rate for a in workload.adapters])[order]
        self._ranks = np.array([a.rank for a in workload.adapters])[order]
        self._n = len(order)
        self._loads = self._rates * mean_request_tokens(workload.lengths) / self.capacity_tok_s
        self._covers = np.array([rank_cover(int(r)) for r in self._ranks])
        self._total_load = float(self._loads.sum())
        self._unplaced_load = np.concatenate([np.cumsum(self._loads[::-1])[::-1], [0.0]])
        g = self.num_gpus
        self._gpu_count = np.zeros(g, np.int64)
        self._gpu_load = np.zeros(g)
        self._gpu_rank = np.zeros(g, np.int64)
        self._gpu_slots = np.zeros(g, np.int64)
        self._gpu_members: list[list[int]] = [[] for _ in range(g)]
        self._i = 0
        self._open = 0
        self._score = None

    def _add(self, gpu: int, count: int, max_loras: int) -> None:
        """Put the next ``count`` adapters on ``gpu`` and set its ``max_loras``, lowered to the largest level
        that starts at the GPU's ``max_lora_rank``."""
        placed = slice(self._i, self._i + count)
        if self._gpu_count[gpu] == 0:
            self._open += 1
        self._gpu_members[gpu].extend(range(placed.start, placed.stop))
        self._gpu_count[gpu] += count
        self._gpu_load[gpu] += self._loads[placed].sum()
        self._gpu_rank[gpu] = max(self._gpu_rank[gpu], self._covers[placed].max())
        self._gpu_slots[gpu] = min(int(max_loras), int(self._max_slots_of_rank[self._gpu_rank[gpu]]))
        self._i += count

    def _check(self, action: Any, expected: str) -> tuple[int, int]:
        """The two components of a ``MultiDiscrete`` action; ``expected`` describes them in the error."""
        arr = np.asarray(action)
        if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer) or not self.action_space.contains(
                arr.astype(self.action_space.dtype)):
            raise InvalidAction(f"action {action!r} is not in {self.action_space}: expected {expected}")
        return int(arr[0]), int(arr[1])

    def _finish(self) -> tuple[float, dict[str, Any]]:
        """Score the open GPUs; the episode's score (see the subclasses' Rewards) and the last step's info."""
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
            value = -self.starvation_penalty * n_starved / n_used
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

    def placement(self) -> Placement:
        """The GPUs filled so far as a :class:`adaptergym.placement.Placement` (adapter ids, ``max_loras``; the CPU
        cache holds all of a GPU's adapters), e.g. to judge a finished episode as every policy is judged:
        ``adaptergym.placement.verify(workload, env.unwrapped.placement(), profile)``.

        Raises:
            ResetNeeded: no episode has started.
        """
        if self._episode is None:
            raise ResetNeeded("no episode yet: call reset() and step() first")
        adapters = self._episode.workload.adapters
        used = np.flatnonzero(self._gpu_count > 0)
        return Placement(tuple(GpuAssignment(k, tuple(adapters[self._order[i]].id for i in self._gpu_members[gpu]),
                                             int(self._gpu_slots[gpu])) for k, gpu in enumerate(used)))

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
