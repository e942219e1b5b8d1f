"""``adaptergym/AdapterFleet-v0``: run a fleet of vLLM replicas over hours of time-varying traffic, one decision
epoch per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from adaptergym.dynamic import DEFAULT_SLO_TTFT_MS, DynamicFleet, EpochResult
from adaptergym.envs.common import check_servable, choose_episode
from adaptergym.envs.fleet_control import (
    ADAPTER_FEATURES,
    FILLS,
    FLEET_FEATURES,
    HYSTERESIS,
    REPLICA_FEATURES,
    SLOT_FRACTIONS,
    FleetControl,
    replica_capacity,
)
from adaptergym.envs.render import text_table
from adaptergym.errors import ConfigError, InvalidAction, WorkloadError
from adaptergym.forecast import FORECASTERS
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.scenarios import get_scenario
from adaptergym.scoring import load_surrogate_scorer
from adaptergym.server_capacity import MAX_LORAS_LEVELS, rank_cover, reference_capacity, slot_caps

SCORERS = ("auto", "twin", "surrogate", "analytic")
#: The dynamic scenario families an episode is drawn from by default.
FAMILIES = "diurnal-v0,flash-crowd-v0,drift-v0"
#: Reward terms, in the order they are summed.
TERMS = ("gpu", "starvation", "slo", "migration", "restart", "invalid_action")


class AdapterFleetEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Serve hours of time-varying multi-LoRA traffic with a fleet of vLLM replicas, re-planned every epoch.

    ## Description

    An episode is one workload of a dynamic scenario family (``diurnal-v0``, ``flash-crowd-v0``, ``drift-v0``:
    64-192 adapters whose rates follow daily cycles, flash crowds or drifting popularity over 2-6 hours) served
    by a fleet of identical GPUs, each a vLLM server of the profile's GPU and model, driven through
    :class:`adaptergym.dynamic.DynamicFleet`. **One step is one decision epoch** (``epoch_s`` simulated
    seconds, 5 minutes by default): the action sets three knobs of a built-in packer
    (:mod:`adaptergym.envs.fleet_packer`), which turns them and a forecast of each adapter's rate into the plan
    of the coming epoch (how many replicas, which adapters each serves, their ``max_loras``); the fleet then
    changes plan at vLLM's costs (replicas added cold-start for the profile's start-up time, about 3 minutes
    plus 3.7 s per adapter slot; adapters moved are loaded at runtime) and serves the epoch.

    Why knobs and not per-adapter moves: an action per adapter would have hundreds of components whose effects
    only show through the whole fleet; the knobs are what an operator tunes on a packer, each with a direct
    effect (fill: GPUs against risk; hysteresis: churn against idle GPUs; slots: memory against adapter
    swaps), and the same three work for any number of adapters. The packer plans on the highest forecast of
    each adapter over the coming epoch and those a replica started next would spend starting.

    ## Action Space

    ``MultiDiscrete([11, 4, 4])``, each an index into a tuple of levels:

    | Index | Knob | Levels |
    |-------|------|--------|
    | 0 | ``fill``: the utilisation planned per replica | 0.2, 0.25, ..., 0.5, 0.6, 0.7, 0.8, 1.0 |
    | 1 | ``hysteresis``: extra room the load must leave before the fleet shrinks | 0, 0.1, 0.25, 0.5 |
    | 2 | ``slot_fraction``: ``max_loras`` per adapter of replicas started now | 0.125, 0.25, 0.5, 1 |

    A replica's utilisation is its planned load over what it serves without starving at its effective adapter
    count (the twin's starvation edges, :mod:`adaptergym.edges`, where they ship for the profile and lengths;
    else one GPU's saturated throughput); the slot fraction also caps the adapters a replica may take per slot
    (``max_loras / slot_fraction``), so a fleet shrinks only onto replicas with slots to spare
    (:mod:`adaptergym.envs.fleet_packer` has the whole rule).

    ``action_masks()`` (also ``info["action_mask"]``) returns the valid levels of the three knobs concatenated,
    as sb3-contrib's ``MaskablePPO`` expects: a fill is masked when the planned load would need more than
    ``max_replicas`` replicas at it (the largest fill never is). A masked fill is replaced by the smallest valid
    one, costs ``invalid_action_penalty`` and is described in ``info["invalid_action"]``. An action outside the
    action space raises :class:`adaptergym.errors.InvalidAction`.

    ## Observation Space

    ``Dict`` of ``Box(float32)``. Loads are in GPUs' worth: tokens/s (rate x mean prompt+output tokens of the
    workload's lengths) over ``info["capacity_tok_s"]``, the saturated throughput of one GPU of the profile
    (measured once by the twin), so 1.0 fills a GPU. Counts and slots are ``log2(1 + x) / 9``, ranks
    ``log2(rank) / 9``. "Last epoch" is the epoch just served; the forecast is the ``forecaster``'s, from the
    arrivals seen so far; "planned" is the highest forecast over the lead epochs (the coming one and those a
    replica started next would spend starting), which is what the packer packs.

    ``"fleet"``, shape ``(15,)``:

    | Index | Observation | Min | Max |
    |-------|-------------|-----|-----|
    | 0 | load that arrived in the last epoch | 0 | inf |
    | 1 | forecast load of the coming epoch | 0 | inf |
    | 2 | planned load | 0 | inf |
    | 3 | change of arrived load from the epoch before | -inf | inf |
    | 4 | replicas in the plan / ``max_replicas`` (above 1 while replaced replicas wait for new ones) | 0 | inf |
    | 5 | replicas still starting / ``max_replicas`` | 0 | inf |
    | 6 | share of adapters starved in the last epoch | 0 | 1 |
    | 7 | served / offered tokens in the last epoch (above 1 when a backlog drains) | 0 | inf |
    | 8 | epochs run / epochs of the episode | 0 | 1 |
    | 9 | sine of the time of day (the scenario's ``season_s``; 0 without one) | -1 | 1 |
    | 10 | cosine of the time of day (0 without a season) | -1 | 1 |
    | 11 | adapters in the workload, ``log2(1 + n) / 9`` | 0 | 1 |
    | 12 | share of the planned load in the ``top_k`` adapters | 0 | 1 |
    | 13 | start-up time of a replica, in epochs | 0 | inf |
    | 14 | planned utilisation: planned load over the capacity of the packer's replicas | 0 | inf |

    ``"adapters"``, shape ``(top_k * 6,)``: the ``top_k`` adapters of highest planned load, one row each
    (``obs["adapters"].reshape(top_k, 6)``), zeros past the workload's adapters:

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | its load in the last epoch | 0 | inf |
    | 1 | its forecast load, coming epoch | 0 | inf |
    | 2 | its planned load | 0 | inf |
    | 3 | its rank, ``log2(rank cover) / 9`` | 0 | 1 |
    | 4 | replicas that hold it, ``log2(1 + n) / 9`` | 0 | 1 |
    | 5 | starved in the last epoch | 0 | 1 |

    ``"replicas"``, shape ``(max_replicas * 10,)``: the replicas that served the last epoch, by id, one row each
    (``obs["replicas"].reshape(max_replicas, 10)``), zeros past them:

    | Col | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 | present | 0 | 1 |
    | 1 | still starting at the epoch's end | 0 | 1 |
    | 2 | adapters it holds, ``log2(1 + n) / 9`` | 0 | 1 |
    | 3 | its ``max_loras``, ``log2(1 + slots) / 9`` | 0 | 1 |
    | 4 | load offered to it in the last epoch | 0 | inf |
    | 5 | served / offered tokens (1 when offered nothing) | 0 | inf |
    | 6 | queue at the epoch's end, ``log2(1 + requests) / 9`` (below) | 0 | inf |
    | 7 | starved in the last epoch | 0 | 1 |
    | 8 | planned load of its adapters (each adapter's planned load split over its replicas) | 0 | inf |
    | 9 | its capacity at the adapters the packer plans for it (what it serves without starving) | 0 | inf |

    The queue is the twin's count of requests waiting on the replica; fast scorers have no queue, and give the
    shortfall ``(offered - served) x epoch length`` in mean requests instead.

    ## Rewards

    Minus the cost of each epoch, every term in GPU-hours and reported in ``info["reward_terms"]`` (the reward
    is their sum, in this order):

    - ``gpu``: ``-GPU-seconds / 3600`` (a replica counts from its cold start until it is removed);
    - ``starvation``: ``-starved_weight x starved adapter-seconds / 3600`` (an adapter is starved over an epoch
      when it is served 10% short of what it was offered, or when it is offered traffic that no serving
      replica holds: :mod:`adaptergym.dynamic.accounting`);
    - ``slo``: ``-slo_weight x requests that missed the TTFT SLO / 3600`` (twin only: fast scorers model no
      latency, so the term is 0 and ``info["slo_share"]`` is None);
    - ``migration``: ``-load_cost_s x adapter loads / 3600`` (runtime loads, and every adapter of a replica that
      starts);
    - ``restart``: ``-restart_cost_s x (cold starts + restarts) / 3600`` (the packer never restarts a running
      replica: its flags are fixed at start);
    - ``invalid_action``: ``-invalid_action_penalty`` for a masked fill, else 0.

    ## Starting State

    ``reset`` picks a family of ``scenario`` uniformly and a seed of its ``split`` with ``self.np_random``
    (``options["scenario"]`` / ``options["scenario_seed"]`` pick them; ``options["workload"]``, a
    ``WorkloadSpec``, workload dict or JSON path with a rate schedule or without, pins the workload), and the
    seed of its arrivals. The episode starts with the fleet an operator would be running: fill 0.5,
    hysteresis 0.25, slot fraction 0.5 on the true rates of the first epochs; reset serves the first epoch with
    it (its cost is in ``info["episode"]`` at the end, not in any reward) and observes it.

    ## Episode End

    Termination: when the workload ends (an episode of ``E`` epochs has ``E - 1`` steps: 71, 23 and 47 for the
    three families at 5-minute epochs). Truncation: none; ``step`` always returns ``truncated=False``.

    ## Info

    Every step: the epoch's figures (:meth:`adaptergym.dynamic.EpochResult.info`: ``scorer``, ``gpus``,
    ``gpu_seconds``, ``starved_adapters``, ``starved_adapter_s``, ``slo_share``, ``p99_ttft_ms``, ``loads``,
    ``migrations``, ``restarts``, ``cold_starts``, ...; None where the scorer does not give a value, never NaN),
    ``reward_terms``, ``knobs`` (the levels applied), ``replicas_planned`` (the packer's target),
    ``invalid_action`` and ``action_mask``. ``reset`` gives ``scorer``, ``scenario``, ``workload_seed`` (-1 when
    pinned), ``num_adapters``, ``epochs``, ``capacity_tok_s``, ``replica_capacity`` (``"starvation edges"`` or
    ``"saturated throughput"``: what utilisation is measured against) and ``action_mask``. The last step adds
    ``episode``, the whole episode's totals (:meth:`adaptergym.dynamic.DynamicFleet.summary`: GPU-hours,
    starved adapter-minutes, SLO share, p99 TTFT, loads, migrations, restarts, ...), first epoch included.

    ## Scorers

    ``"twin"`` simulates every request (latency and SLO included; seconds per epoch); ``"surrogate"`` and
    ``"analytic"`` are fast mode (:mod:`adaptergym.dynamic.fast`: the same plan changes and start-up delays,
    each replica judged by a per-GPU model, arrivals drawn as per-epoch Poisson counts). ``"auto"`` is the
    surrogate when one is trained for the profile, else the analytic estimate. ``info["scorer"]`` names the one
    used. Train in fast mode, evaluate with the twin.

    ## Arguments

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | ``scenario`` | str | ``"diurnal-v0,flash-crowd-v0,drift-v0"`` | scenario family, or several comma-separated |
    | ``split`` | str | ``"train"`` | scenario seeds to draw from: ``"train"`` or ``"test"`` |
    | ``scorer`` | str | ``"auto"`` | ``"auto"``, ``"twin"``, ``"surrogate"`` or ``"analytic"`` (see Scorers) |
    | ``epoch_s`` | float | 300.0 | simulated seconds of one decision epoch |
    | ``forecaster`` | str | ``"ewma"`` | the forecaster of observations and plans (``adaptergym.forecast``) |
    | ``max_replicas`` | int | 16 | the largest fleet the packer plans; rows of ``"replicas"`` |
    | ``top_k`` | int | 16 | rows of ``"adapters"`` |
    | ``profile`` | str or TwinProfile | None | twin profile (None: the default H100 / Llama-3.1-8B) |
    | ``starved_weight`` | float | 5.0 | GPU-seconds one starved adapter-second costs |
    | ``slo_weight`` | float | 1.0 | GPU-seconds one request missing the TTFT SLO costs |
    | ``load_cost_s`` | float | 10.0 | GPU-seconds one adapter load costs |
    | ``restart_cost_s`` | float | 60.0 | GPU-seconds one cold start or restart costs (beyond its GPU-seconds) |
    | ``slo_ttft_ms`` | float | 2000.0 | the TTFT objective, ms |
    | ``invalid_action_penalty`` | float | 0.1 | cost of a masked fill |
    | ``render_mode`` | str or None | None | ``"ansi"``: a table of the replicas |

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        scenario: str = FAMILIES,
        split: str = "train",
        scorer: str = "auto",
        epoch_s: float = 300.0,
        forecaster: str = "ewma",
        max_replicas: int = 16,
        top_k: int = 16,
        profile: str | TwinProfile | None = None,
        starved_weight: float = 5.0,
        slo_weight: float = 1.0,
        load_cost_s: float = 10.0,
        restart_cost_s: float = 60.0,
        slo_ttft_ms: float = DEFAULT_SLO_TTFT_MS,
        invalid_action_penalty: float = 0.1,
        render_mode: str | None = None,
    ) -> None:
        if scorer not in SCORERS:
            raise ConfigError(f"scorer: {scorer!r} is not one of {', '.join(SCORERS)}")
        if max_replicas < 1 or top_k < 1:
            raise ConfigError(f"max_replicas ({max_replicas}) and top_k ({top_k}) must be >= 1")
        weights = {"starved_weight": starved_weight, "slo_weight": slo_weight, "load_cost_s": load_cost_s,
                   "restart_cost_s": restart_cost_s, "invalid_action_penalty": invalid_action_penalty}
        for name, value in weights.items():
            if not value >= 0:
                raise ConfigError(f"{name}: {value!r} must be a number >= 0")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode: {render_mode!r} is not one of {self.metadata['render_modes']}")
        FORECASTERS.get(forecaster)
        self.scenarios = tuple(get_scenario(name.strip()) for name in scenario.split(",") if name.strip())
        if not self.scenarios:
            raise ConfigError("scenario: give a scenario family, e.g. flash-crowd-v0")
        self.scenario = self.scenarios[0]  # the current episode's (the first until reset)
        self.split = split
        self.scenario.seeds(split)  # checks the split's name
        self.profile = load_profile(profile)
        if scorer == "auto":
            scorer = "surrogate" if load_surrogate_scorer(self.profile) is not None else "analytic"
        self.scorer = scorer
        self.epoch_s = float(epoch_s)
        self.forecaster = forecaster
        self.max_replicas = int(max_replicas)
        self.top_k = int(top_k)
        self.weights = weights
        self.slo_ttft_ms = float(slo_ttft_ms)
        self.render_mode = render_mode
        self._caps = slot_caps(self.profile, MAX_LORAS_LEVELS)
        self._replica_capacity: dict[tuple, tuple[np.ndarray, str]] = {}
        inf = np.inf
        fleet_low = np.zeros(FLEET_FEATURES, np.float32)
        fleet_low[[3, 9, 10]] = (-inf, -1.0, -1.0)
        fleet_high = np.array([inf, inf, inf, inf, inf, inf, 1, inf, 1, 1, 1, 1, 1, inf, inf], np.float32)
        self.action_space = spaces.MultiDiscrete([len(FILLS), len(HYSTERESIS), len(SLOT_FRACTIONS)])
        self.observation_space = spaces.Dict({
            "fleet": spaces.Box(fleet_low, fleet_high, dtype=np.float32),
            "adapters": spaces.Box(np.zeros(self.top_k * ADAPTER_FEATURES, np.float32),
                                   np.tile(np.array([inf, inf, inf, 1, 1, 1], np.float32), self.top_k),
                                   dtype=np.float32),
            "replicas": spaces.Box(np.zeros(self.max_replicas * REPLICA_FEATURES, np.float32),
                                   np.tile(np.array([1, 1, 1, 1, inf, inf, inf, 1, inf, inf], np.float32),
                                           self.max_replicas), dtype=np.float32),
        })
        self.fleet: DynamicFleet | None = None
        self.control: FleetControl | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        family = int(self.np_random.integers(len(self.scenarios)))  # drawn always: the stream stays aligned
        name = options.pop("scenario", None)
        self.scenario = get_scenario(name) if name is not None else self.scenarios[family]
        episode = choose_episode(self.scenario, self.scenario.seeds(self.split), self.np_random, options)
        workload = episode.workload
        check_servable(workload, self._caps)
        season = self.scenario.season_s if episode.workload_seed >= 0 else None
        fleet = DynamicFleet(workload, self.profile, seed=episode.request_seed, epoch_s=self.epoch_s,
                             scorer=self.scorer, slo_ttft_ms=self.slo_ttft_ms, season_s=season,
                             counts_only=self.scorer != "twin")
        if fleet.epochs < 2:
            raise WorkloadError(f"epoch_s: {self.epoch_s:g} s leaves the workload ({fleet.duration_s:g} s) fewer than "
                                "two epochs, and an episode decides from the second on; use a shorter epoch")
        self.fleet, self.control = fleet, self.control_for(fleet)
        fleet.step(self.control.first_plan())
        self.control.update()
        info = {"scorer": self.scorer, "scenario": self.scenario.name, "workload_seed": episode.workload_seed,
                "num_adapters": len(fleet.adapter_ids), "epochs": fleet.epochs,
                "capacity_tok_s": self.control.capacity_tok_s, "replica_capacity": self.control.capacity_source,
                "action_mask": self.control.action_masks()}
        return self.control.observation(), info

    def control_for(self, fleet: DynamicFleet) -> FleetControl:
        """The observations, masks and packer this environment puts on ``fleet`` (an agent replayed on any
        :class:`DynamicFleet`, e.g. a twin-scored one, sees exactly what it trained on through this)."""
        if fleet.epoch_s != self.epoch_s:
            raise ConfigError(f"epoch_s: the fleet decides every {fleet.epoch_s:g} s, this environment every "
                              f"{self.epoch_s:g} s")
        if fleet.profile.name != self.profile.name:
            raise ConfigError(f"profile: the fleet runs {fleet.profile.name!r}, this environment "
                              f"{self.profile.name!r}")
        capacity = reference_capacity(self.profile, fleet.lengths)
        cover = rank_cover(int(fleet.adapter_ranks.max()))
        key = (fleet.lengths, cover, len(fleet.adapter_ids))
        if key not in self._replica_capacity:
            self._replica_capacity[key] = replica_capacity(self.profile, fleet.lengths, cover, key[2], capacity)
        per_replica, source = self._replica_capacity[key]
        return FleetControl(fleet, forecaster=self.forecaster, capacity_tok_s=capacity, capacity=per_replica,
                            capacity_source=source, max_replicas=self.max_replicas, top_k=self.top_k,
                            max_slots=MAX_LORAS_LEVELS[self._caps[cover] - 1])

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.fleet is None or self.control is None or self.fleet.done:
            raise ResetNeeded("the episode is over (or never started): call reset() before step()")
        decision = self.control.decide(self._check(action))
        result = self.fleet.step(decision.plan)
        self.control.update()
        terms = self.reward_terms(result, bool(decision.invalid))
        reward = float(sum(terms[name] for name in TERMS))
        terminated = self.fleet.done
        knobs = decision.knobs
        info = {**result.info(), "reward_terms": terms,
                "knobs": {"fill": knobs.fill, "hysteresis": knobs.hysteresis, "slot_fraction": knobs.slot_fraction},
                "replicas_planned": decision.replicas, "invalid_action": decision.invalid,
                "action_mask": self.control.action_masks()}
        if terminated:
            info["episode"] = self.fleet.summary().to_dict()
        return self.control.observation(), reward, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Valid levels of each knob for the next step, concatenated (all True before the first reset)."""
        if self.control is None:
            return np.ones(int(self.action_space.nvec.sum()), bool)
        return self.control.action_masks()

    def reward_terms(self, result: EpochResult, invalid: bool) -> dict[str, float]:
        """The cost of one epoch, term by term, in GPU-hours (class doc, Rewards)."""
        w, changes = self.weights, result.changes
        missed = 0 if result.slo_judged is None else result.slo_judged - (result.slo_met or 0)
        return {"gpu": -result.gpu_seconds / 3600.0,
                "starvation": -w["starved_weight"] * result.starved_adapter_s / 3600.0,
                "slo": -w["slo_weight"] * missed / 3600.0,
                "migration": -w["load_cost_s"] * changes.adapter_loads / 3600.0,
                "restart": -w["restart_cost_s"] * (len(changes.cold_starts) + len(changes.restarts)) / 3600.0,
                "invalid_action": -w["invalid_action_penalty"] if invalid else 0.0}

    def _check(self, action: Any) -> np.ndarray:
        arr = np.asarray(action)
        if arr.shape != (3,) or not np.issubdtype(arr.dtype, np.integer) or not self.action_space.contains(
                arr.astype(self.action_space.dtype)):
            raise InvalidAction(f"action {action!r} is not in {self.action_space}: expected [fill in 0..6, "
                                "hysteresis in 0..3, slot fraction in 0..3]")
        return arr

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | None:
        """``ansi``: the replicas of the last epoch (state, adapters, slots, offered and served load, starved)."""
        if self.render_mode is None or self.fleet is None or not self.fleet.results:
            return None
        last = self.fleet.results[-1]
        capacity = self.control.capacity_tok_s if self.control else 1.0
        rows = [[r.id, r.state, r.adapters, r.max_loras, r.offered_tok_s / capacity,
                 r.served_tok_s / capacity, "yes" if r.starved else "no"] for r in last.replicas]
        title = (f"{self.scenario.name} epoch {last.epoch + 1}/{self.fleet.epochs} ({last.scorer}): "
                 f"{last.gpus} replicas, {int(last.starved.sum())} starved adapters")
        return text_table(title, ["replica", "state", "adapters", "max_loras", "offered", "served", "starved"], rows)
