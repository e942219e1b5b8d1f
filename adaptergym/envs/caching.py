"""``adaptergym/AdapterCaching-v0``: the papers' adapter caching problem on one GPU, as a one-step episode."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from adaptergym.envs.common import Episode, check_servable, choose_episode, log_feature, rank_feature
from adaptergym.envs.render import bar_chart, text_table
from adaptergym.errors import ConfigError, InvalidAction, WorkloadError
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.scenarios import get_scenario
from adaptergym.scoring import FleetScore, GpuPlan, make_scorer
from adaptergym.server_capacity import MAX_LORAS_LEVELS, mean_request_tokens, rank_cover, reference_capacity, slot_caps

ADAPTER_FEATURES = 4
WORKLOAD_FEATURES = 5


class AdapterCachingEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Choose how many of a workload's adapters one GPU serves, and its ``max_loras``.

    ## Description

    The adapter caching problem of Agullo et al.: a workload offers candidate LoRA adapters, each with a
    Poisson request rate and a rank; one vLLM server (the profile's GPU and model) should serve as much of
    that load as it can without starving. Candidates are ordered by decreasing request rate (ties by workload
    order); the agent picks how many of the first ones the GPU serves and how many GPU adapter slots
    (``max_loras``) it gets. The Digital Twin (or the surrogate in fast mode) then serves them and the episode
    ends: every episode is one step, a contextual bandit.

    ## Action Space

    ``MultiDiscrete([max_adapters, len(max_loras_levels)])``:

    | Index | Action | Values |
    |-------|--------|--------|
    | 0 | serve the first ``a[0] + 1`` candidates | 0 .. max_adapters-1 |
    | 1 | ``max_loras``, as an index into ``max_loras_levels`` | 0 .. len(levels)-1 |

    The server starts with ``max_lora_rank`` the smallest vLLM rank covering the served adapters and a CPU
    cache holding all of them. A ``max_loras`` too large for that rank is not corrected: vLLM would refuse to
    start, and so does the twin (see Rewards).

    ``action_masks()`` returns the valid choices as one boolean array of length ``max_adapters +
    len(max_loras_levels)`` (the two components concatenated, as sb3-contrib's ``MaskablePPO`` expects;
    ``info["action_mask"]`` holds the same): counts up to the number of candidates, and the levels with
    which vLLM starts at the smallest candidate's rank (a level beyond that does not start with any choice of
    adapters: it is beyond the profile's memory).

    Invalid actions never raise: a count beyond the candidates is lowered to all of them, a masked level to the
    largest valid one; each costs ``invalid_action_penalty`` and is described in ``info["invalid_action"]``
    (empty when valid). An action outside the action space raises :class:`adaptergym.errors.InvalidAction`.

    ## Observation Space

    ``Dict`` of ``Box(float32)``. Loads are offered tokens/s (rate x mean prompt+output tokens of the
    workload's length distribution) divided by ``info["capacity_tok_s"]``, the saturated throughput of one
    GPU of the profile (measured once by the twin): a load of 1 fills the GPU. Slots are
    ``log2(1 + x) / 9``, ranks ``log2(rank) / 9`` (rank 8: 0.33, 16: 0.44, 32: 0.56, 512: 1).

    ``"adapters"``, shape ``(max_adapters * 4,)``: a table of one row per candidate in order (zero rows past
    the last), flattened row by row (candidate ``i``, column ``c`` is entry ``4 * i + c``;
    ``obs["adapters"].reshape(max_adapters, 4)`` gives the table back):

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | present: 1 for a candidate, 0 for padding | 0 | 1 |
    | 1 | its load (fraction of the GPU's capacity) | 0 | inf |
    | 2 | its rank, ``log2(rank) / 9`` | 0 | 1 |
    | 3 | load of the first ``row + 1`` candidates together | 0 | inf |

    ``"workload"``, shape ``(5,)``:

    | Index | Observation | Min | Max |
    |-------|-------------|-----|-----|
    | 0 | candidates / ``max_adapters`` | 0 | 1 |
    | 1 | load of all candidates | 0 | inf |
    | 2 | candidates, ``log2(1 + n) / 9`` | 0 | 1 |
    | 3 | largest ``max_loras`` that starts at the smallest candidate rank, ``log2(1 + slots) / 9`` | 0 | 1 |
    | 4 | largest ``max_loras`` that starts at the largest candidate rank, ``log2(1 + slots) / 9`` | 0 | 1 |

    ## Rewards

    With ``share`` the served adapters' part of the candidates' request rate and ``ratio`` the scorer's served
    / offered tokens of the GPU (after a warm-up; capped at 1):

    - the GPU keeps up (served falls less than 10% short of offered): ``ratio * share``, in [0, 1];
    - starved: ``ratio * share - 1``, in [-1, 0);
    - the config does not start (``info["startup"]`` says why): nothing is served, so -1;

    minus ``invalid_action_penalty`` for an invalid action. Serving more load scores more until the GPU starves.

    ## Starting State

    ``reset`` picks the workload: ``options["workload"]`` (a ``WorkloadSpec``, a workload dict or a path to
    a workload JSON) if given, else the workload of ``options["scenario_seed"]``, else that of a seed drawn
    uniformly with ``self.np_random`` from the scenario's ``split`` seeds. The seed of the scorer's request
    draw also comes from ``self.np_random``, so ``reset(seed=s)`` fixes the whole episode.

    ## Episode End

    Termination: after the one step. Truncation: none; ``step`` always returns ``truncated=False``.

    ## Info

    ``reset``: ``"scorer"`` (``"twin"``, ``"surrogate"`` or ``"analytic"``), ``"workload_seed"`` (-1 when pinned),
    ``"num_adapters"``, ``"capacity_tok_s"``, ``"action_mask"``. ``step`` adds ``"invalid_action"``, ``"score"``
    (reward without penalty), ``"num_served"``, ``"max_loras"``, ``"max_lora_rank"``, ``"startup"``, ``"starved"``,
    ``"offered_tok_s"``, ``"served_tok_s"``, ``"served_ratio"``, ``"p99_ttft_ms"`` (None unless the twin scored
    and a request finished: never NaN), and with the twin ``"metrics"``, its metrics over the window (undefined
    ones None).

    ## Arguments

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | ``scenario`` | str | ``"paper-ml-test-v0"`` | scenario the workloads come from |
    | ``split`` | str | ``"train"`` | scenario seeds to draw from: ``"train"`` or ``"test"`` |
    | ``max_adapters`` | int | 384 | most candidates a workload may have (fixes the spaces) |
    | ``scorer`` | str | ``"auto"`` | ``"auto"``, ``"twin"``, ``"surrogate"`` or ``"analytic"`` (see Scorers) |
    | ``profile`` | str or TwinProfile | None | twin profile (None: the default H100 / Llama-3.1-8B) |
    | ``window_s`` | float | 300.0 | simulated seconds the twin scores (the first 20% are warm-up) |
    | ``max_loras_levels`` | tuple of int | ``(1, 2, 4, ..., 384)`` | the ``max_loras`` values an action picks from |
    | ``invalid_action_penalty`` | float | 0.1 | cost of an invalid action |
    | ``render_mode`` | str or None | None | ``"ansi"`` (a text table) or ``"rgb_array"`` (a bar chart) |

    ## Scorers

    ``scorer`` picks who judges the episode: ``"twin"`` (the Digital Twin over ``window_s``), ``"surrogate"``
    or ``"analytic"`` (fast mode), or ``"auto"``; ``adaptergym.scoring`` says how each decides what a
    GPU serves and whether it starves. ``info["scorer"]`` always names the one used.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}  # noqa: RUF012

    def __init__(
        self,
        scenario: str = "paper-ml-test-v0",
        split: str = "train",
        max_adapters: int = 384,
        scorer: str = "auto",
        profile: str | TwinProfile | None = None,
        window_s: float = 300.0,
        max_loras_levels: tuple[int, ...] = MAX_LORAS_LEVELS,
        invalid_action_penalty: float = 0.1,
        render_mode: str | None = None,
    ) -> None:
        if max_adapters < 1:
            raise ConfigError(f"max_adapters: {max_adapters} must be >= 1")
        levels = tuple(int(x) for x in max_loras_levels)
        if not levels or levels[0] < 1 or any(b <= a for a, b in pairwise(levels)):
            raise ConfigError(f"max_loras_levels: {max_loras_levels} must be increasing integers >= 1")
        if invalid_action_penalty < 0:
            raise ConfigError(f"invalid_action_penalty: {invalid_action_penalty} must be >= 0")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode: {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.scenario = get_scenario(scenario)
        self.split = split
        self._seeds = self.scenario.seeds(split)
        self.max_adapters = int(max_adapters)
        self.profile = load_profile(profile)
        self.levels = np.array(levels)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.render_mode = render_mode
        self.scorer = make_scorer(scorer, self.profile, window_s, False)
        self._caps = slot_caps(self.profile, levels)
        m, inf = self.max_adapters, np.inf
        self.action_space = spaces.MultiDiscrete([m, len(levels)])
        self.observation_space = spaces.Dict({
            "adapters": spaces.Box(np.zeros(m * ADAPTER_FEATURES, np.float32),
                                   np.tile(np.array([1, inf, 1, inf], np.float32), m), dtype=np.float32),
            "workload": spaces.Box(np.zeros(WORKLOAD_FEATURES, np.float32),
                                   np.array([1, inf, 1, 1, 1], np.float32), dtype=np.float32),
        })
        self._episode: Episode | None = None
        self.capacity_tok_s = float("nan")  # one GPU's saturated throughput for the episode's lengths
        self._done = False
        self._result: tuple[int, int, int, FleetScore] | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode = choose_episode(self.scenario, self._seeds, self.np_random, options)
        workload = episode.workload
        if len(workload.adapters) > self.max_adapters:
            raise WorkloadError(f"workload {workload.name!r} has {len(workload.adapters)} adapters > max_adapters "
                                f"({self.max_adapters}); make the env with a larger max_adapters")
        check_servable(workload, self._caps)
        self._episode = episode
        self.capacity_tok_s = reference_capacity(self.profile, workload.lengths)
        rates = np.array([a.rate for a in workload.adapters])
        self._order = np.argsort(-rates, kind="stable")
        self._rates = rates[self._order]
        self._ranks = np.array([a.rank for a in workload.adapters])[self._order]
        self._n = n = len(rates)
        loads = self._rates * mean_request_tokens(workload.lengths) / self.capacity_tok_s
        self._loads = loads
        # Served adapters are a prefix, so the rank to start with is the running maximum of ranks.
        self._prefix_rank = np.array([rank_cover(int(r)) for r in np.maximum.accumulate(self._ranks)])
        covers = [rank_cover(int(r)) for r in self._ranks]
        low_cap, high_cap = self._caps[min(covers)], self._caps[max(covers)]
        self._mask = np.concatenate([np.arange(self.max_adapters) < n, np.arange(len(self.levels)) < low_cap])
        table = np.zeros((self.max_adapters, ADAPTER_FEATURES), np.float32)
        table[:n] = np.column_stack([np.ones(n), loads, rank_feature(self._ranks), np.cumsum(loads)])
        cap_values = np.concatenate([[0], self.levels])
        summary = np.array([n / self.max_adapters, loads.sum(), log_feature(n), log_feature(cap_values[low_cap]),
                            log_feature(cap_values[high_cap])], np.float32)
        self._obs = {"adapters": table.ravel(), "workload": summary}
        self._done = False
        self._result = None
        info = {"scorer": self.scorer.name, "workload_seed": episode.workload_seed, "num_adapters": n,
                "capacity_tok_s": self.capacity_tok_s, "action_mask": self._mask.copy()}
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._episode is None or self._done:
            raise ResetNeeded("the episode is over (or never started): call reset() before step()")
        arr = np.asarray(action)
        if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer) or not self.action_space.contains(
                arr.astype(self.action_space.dtype)):
            raise InvalidAction(f"action {action!r} is not in {self.action_space}: expected "
                                f"[count-1 in 0..{self.max_adapters - 1}, level in 0..{len(self.levels) - 1}]")
        count, level = int(arr[0]) + 1, int(arr[1])
        penalty, notes = 0.0, []
        if count > self._n:
            notes.append(f"serving {count} adapters but the workload offers {self._n}; serving all {self._n}")
            count, penalty = self._n, penalty + self.invalid_action_penalty
        valid_levels = np.flatnonzero(self._mask[self.max_adapters:])
        if level > valid_levels[-1]:
            notes.append(f"max_loras {self.levels[level]} does not start on this GPU at any candidate rank; "
                         f"set to {self.levels[valid_levels[-1]]}")
            level, penalty = int(valid_levels[-1]), penalty + self.invalid_action_penalty
        workload = self._episode.workload
        served = tuple(workload.adapters[int(j)] for j in self._order[:count])
        rank = int(self._prefix_rank[count - 1])
        plan = GpuPlan(tuple(range(count)), int(self.levels[level]), rank)
        score = self.scorer.score(workload.with_adapters(served), [plan], self._episode.request_seed)
        self._done = True
        self._result = (count, int(self.levels[level]), rank, score)
        share = float(self._rates[:count].sum() / max(self._rates.sum(), 1e-12))
        ratio = float(min(score.served_ratio[0], 1.0))
        starved = bool(score.starved[0])
        value = ratio * share - (1.0 if starved else 0.0)
        info: dict[str, Any] = {
            "invalid_action": "; ".join(notes), "scorer": score.scorer, "score": value, "num_served": count,
            "max_loras": int(self.levels[level]), "max_lora_rank": rank, "startup": score.startup[0],
            "starved": starved, "offered_tok_s": float(score.offered_tok_s[0]),
            "served_tok_s": float(score.served_tok_s[0]), "served_ratio": float(score.served_ratio[0]),
            "p99_ttft_ms": score.p99_ttft_ms, "action_mask": self._mask.copy(),
        }
        if score.metrics:
            info["metrics"] = score.metrics
        return self._observation(), value - penalty, True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid choices: ``max_adapters`` count flags then one flag per ``max_loras`` level."""
        return self._mask.copy()

    def _observation(self) -> dict[str, np.ndarray]:
        return {key: value.copy() for key, value in self._obs.items()}

    def render(self) -> str | np.ndarray | None:
        """``ansi``: the candidates (grouped by rate and rank) and, after the step, the GPU's outcome;
        ``rgb_array``: cumulative load of the first k candidates, with the choice and the served load."""
        if self.render_mode is None or self._episode is None:
            return None
        if self.render_mode == "ansi":
            groups: dict[tuple[float, int], int] = {}
            for rate, rank in zip(self._rates.tolist(), self._ranks.tolist(), strict=True):
                groups[(rate, rank)] = groups.get((rate, rank), 0) + 1
            rows = [[count, rate, rank] for (rate, rank), count in groups.items()]
            footer = "not decided yet"
            if self._result is not None:
                count, slots, rank, score = self._result
                footer = (f"served the first {count} with max_loras {slots}, max_lora_rank {rank}, scored by "
                          f"{score.scorer}: startup {score.startup[0]}, served/offered "
                          f"{score.served_ratio[0]:.3f}, {'starved' if score.starved[0] else 'keeps up'}")
            title = (f"{self._episode.workload.name or 'workload'}: {self._n} candidates, load "
                     f"{self._loads.sum():.2f} GPUs")
            return text_table(title, ["adapters", "rate req/s", "rank"], rows, footer)
        cumulative = np.cumsum(self._loads)
        k = np.unique(np.linspace(1, self._n, min(self._n, 24)).astype(int))
        served = starved = None
        if self._result is not None:
            count, _, _, score = self._result
            served = np.where(k <= count, np.minimum(cumulative[k - 1], cumulative[count - 1]
                                                     * min(score.served_ratio[0], 1.0)), 0.0)
            starved = np.full(len(k), bool(score.starved[0]))
        return bar_chart("load of the first k candidates (served: the chosen k)", [str(x) for x in k],
                         cumulative[k - 1], served, starved)
