"""The scenario suite: named, versioned workload families with fixed train and test seeds.

A scenario is a recipe for drawing workloads (adapters with rates and ranks, lengths, arrivals), so that
results on it are comparable across policies and papers, in the spirit of CompilerGym's benchmarks::

    from adaptergym.scenarios import get_scenario, scenario_names

    scenario = get_scenario("zipf-large")          # latest version: "zipf-large-v0"
    train = [scenario.workload(s) for s in scenario.train_seeds[:100]]
    test = [scenario.workload(s) for s in scenario.test_seeds]   # report results on these
    w = scenario.sample(rng)                      # a fresh draw from any np.random.Generator

``workload(seed)`` is a pure function of the seed (same seed, same workload, on every machine with the same
numpy). Every scenario's ``train_seeds`` and ``test_seeds`` are disjoint ranges. A scenario's name ends in
``-vN``; the version goes up whenever its sampler changes, so a published ``zipf-large-v0`` figure stays
reproducible.

Rates are in requests/s. For scale: one H100 serving Llama-3.1-8B (the default profile) saturates at roughly
29 req/s (12.5k tok/s) of ShareGPT-length requests with 32 adapters in 32 slots (``adaptergym simulate`` of a
32-adapter Zipf workload at 30 and 40 req/s) and serves about 20 req/s with a low p99 TTFT; fewer with many
adapters and few slots.

The dynamic families (``diurnal``, ``flash-crowd``, ``drift``) are hours long and carry a rate ``schedule``
(:mod:`adaptergym.workload.schedule`): their load moves over the run, so a fleet sized for the peak idles at
the trough. Each adapter's ``rate`` is its base (calm-time) rate; ``rate_table(w)`` gives the true rate at any
time. A scenario's ``season_s`` is the length of its (compressed) day, for seasonal forecasters; None where
the family has no daily cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from adaptergym.errors import ConfigError, UnknownScenario
from adaptergym.registry import Registry
from adaptergym.workload import (
    AdapterSpec,
    ArrivalSpec,
    Daily,
    Drift,
    Flash,
    LengthSpec,
    WorkloadSpec,
    cycled_workload,
    powerlaw_workload,
)
from adaptergym.workload.schedule import MMPP

#: Seeds of the training split of every scenario (use any of them while developing a policy).
TRAIN_SEEDS = range(0, 10_000)
#: Seeds of the test split of every scenario (report results on all of them, and train on none).
TEST_SEEDS = range(1_000_000, 1_000_100)
#: Nominal duration of scenario workloads, s (environments score shorter windows; see their ``window_s``).
DURATION_S = 3600.0

Sampler = Callable[[np.random.Generator], WorkloadSpec]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, versioned workload family.

    Attributes:
        name: registered name with its version, e.g. ``"zipf-large-v0"``.
        description: one line on what the family contains.
        sampler: draws one workload from a generator (use :meth:`sample` or :meth:`workload`).
        train_seeds: seeds of the training split.
        test_seeds: seeds of the test split (disjoint from ``train_seeds``).
        season_s: length of the family's daily cycle, s (None: no daily cycle), for seasonal forecasters.
    """

    name: str
    description: str
    sampler: Sampler = field(repr=False)
    train_seeds: range = TRAIN_SEEDS
    test_seeds: range = TEST_SEEDS
    season_s: float | None = None

    def sample(self, rng: np.random.Generator) -> WorkloadSpec:
        """A workload drawn with ``rng`` (named after the scenario)."""
        return self.sampler(rng).with_name(self.name)

    def workload(self, seed: int) -> WorkloadSpec:
        """The workload of ``seed`` (named ``"<scenario>/<seed>"``): a pure function of the seed."""
        return self.sampler(np.random.default_rng(seed)).with_name(f"{self.name}/{seed}")

    def seeds(self, split: str) -> range:
        """The seeds of ``split`` (``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise ValueError(f"split: {split!r} must be 'train' or 'test'")
        return self.train_seeds if split == "train" else self.test_seeds


SCENARIOS: Registry[Scenario] = Registry("scenario", UnknownScenario)


def _scenario(name: str, description: str, season_s: float | None = None) -> Callable[[Sampler], Sampler]:
    """Register ``sampler`` as the scenario ``name``."""

    def decorate(sampler: Sampler) -> Sampler:
        SCENARIOS.register(name)(lambda: Scenario(name, description, sampler, season_s=season_s))
        return sampler

    return decorate


def scenario_names() -> list[str]:
    """Every registered scenario name, with its version."""
    return SCENARIOS.names()


def get_scenario(name: str) -> Scenario:
    """The scenario ``name``; without a ``-vN`` suffix, its latest version.

    Raises:
        UnknownScenario: no such scenario (the message suggests the closest names).
    """
    if not re.search(r"-v\d+$", name):
        versions = [n for n in SCENARIOS.names() if re.fullmatch(re.escape(name) + r"-v\d+", n)]
        if versions:
            name = max(versions, key=lambda n: int(n.rsplit("-v", 1)[1]))
    return SCENARIOS.get(name)()


def parse_seeds(text: str, scenario: Scenario) -> list[int]:
    """``"test"`` (every test seed of ``scenario``) or ``"N"`` (the first N of them), as commands take them.

    Raises:
        ConfigError: anything else, or N outside 1..len(test seeds).
    """
    test = scenario.test_seeds
    if text == "test":
        return list(test)
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(f"seeds: {text!r} is neither 'test' nor a number of test seeds") from None
    if not 1 <= count <= len(test):
        raise ConfigError(f"seeds: {count} must be 1-{len(test)} (the test split's size)")
    return list(test[:count])


@_scenario("uniform-small-v0", "8-32 adapters of equal rate, 2-20 req/s in all, ranks 8/16/32: one or two GPUs")
def _uniform_small(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(8, 33))
    return powerlaw_workload(n, float(rng.uniform(2.0, 20.0)), alpha=0.0, ranks=(8, 16, 32), rng=rng,
                             duration_s=DURATION_S)


@_scenario("zipf-large-v0", "64-192 adapters, Zipf popularity (alpha 0.5-1.5), 20-80 req/s, ranks 8/16/32")
def _zipf_large(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(64, 193))
    return powerlaw_workload(n, float(rng.uniform(20.0, 80.0)), alpha=float(rng.uniform(0.5, 1.5)),
                             ranks=(8, 16, 32), rng=rng, duration_s=DURATION_S)


@_scenario("bursty-v0", "32-128 adapters, Zipf (alpha 1), Gamma arrivals with CV 2-4, 10-50 req/s")
def _bursty(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(32, 129))
    return powerlaw_workload(n, float(rng.uniform(10.0, 50.0)), alpha=1.0, ranks=(8, 16, 32), rng=rng,
                             duration_s=DURATION_S, arrival=ArrivalSpec("gamma", float(rng.uniform(2.0, 4.0))))


@_scenario("mixed-ranks-v0", "32-128 adapters, ranks 8-128 (half of them 8 or 16), Zipf (alpha 0.5-1.5), 10-50 req/s")
def _mixed_ranks(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(32, 129))
    workload = powerlaw_workload(n, float(rng.uniform(10.0, 50.0)), alpha=float(rng.uniform(0.5, 1.5)),
                                 ranks=(8,), rng=rng, duration_s=DURATION_S)
    ranks = rng.choice([8, 16, 32, 64, 128], size=n, p=[0.25, 0.25, 0.2, 0.2, 0.1])
    adapters = tuple(AdapterSpec(a.id, int(r), a.rate) for a, r in zip(workload.adapters, ranks, strict=True))
    return workload.with_adapters(adapters)


#: The test grid of the papers' ML study (Agullo et al.): (rates req/s, ranks), cycled over the adapters.
PAPER_TRIPLES = (
    ((0.05, 0.0125, 0.003125), (8, 8, 16)),
    ((0.4, 0.05, 0.00625), (8, 16, 32)),
    ((0.4, 0.05, 0.025), (8, 8, 32)),
    ((0.8, 0.0125, 0.003125), (8, 16, 16)),
    ((0.8, 0.4, 0.05), (8, 8, 32)),
    ((3.2, 1.6, 0.025), (16, 16, 16)),
)
#: Numbers of adapters in the papers' test grid.
PAPER_SIZES = (16, 32, 64, 96, 128, 160, 192, 256, 320, 384)


@_scenario("paper-ml-test-v0", "the papers' test grid: 6 rate/rank triples cycled over 16-384 adapters, ShareGPT")
def _paper_ml_test(rng: np.random.Generator) -> WorkloadSpec:
    rates, ranks = PAPER_TRIPLES[int(rng.integers(len(PAPER_TRIPLES)))]
    n = PAPER_SIZES[int(rng.integers(len(PAPER_SIZES)))]
    return cycled_workload(n, rates, ranks, duration_s=DURATION_S, lengths=LengthSpec("sharegpt"))


#: The compressed day of ``diurnal-v0``, s: three days in a six-hour run, so seasonal forecasters see two full
#: days before the last one.
DIURNAL_DAY_S = 7200.0


@_scenario("diurnal-v0", "64-192 adapters, Zipf (alpha 0.6-1.2), 40-90 req/s on average, a daily cycle compressed "
           "to 2 h (3 days in 6 h), adapters in 3 regions whose peaks differ", season_s=DIURNAL_DAY_S)
def _diurnal(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(64, 193))
    workload = powerlaw_workload(n, float(rng.uniform(40.0, 90.0)), alpha=float(rng.uniform(0.6, 1.2)),
                                 ranks=(8, 16, 32), rng=rng, duration_s=3 * DIURNAL_DAY_S)
    # Most traffic follows one region's day; the other two peak a sixth and a quarter of a day later.
    region = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    peak = float(rng.uniform(0.0, DIURNAL_DAY_S)) + np.array([0.0, 1 / 6, 0.25])[region] * DIURNAL_DAY_S
    amplitude = np.clip(rng.uniform(0.5, 0.8) + rng.uniform(-0.15, 0.15, n), 0.0, 0.95)
    daily = Daily(tuple(a.id for a in workload.adapters), tuple(float(a) for a in amplitude),
                  tuple(float(p % DIURNAL_DAY_S) for p in peak), DIURNAL_DAY_S)
    return workload.with_schedule((daily,))


@_scenario("flash-crowd-v0", "64-192 adapters, Zipf (alpha 0.8-1.2), 25-60 req/s calm; 3-6 flash crowds of 5-20 min "
           "lift 1-3 adapters (mostly from the tail) to 3-12 req/s each; a few adapters switch between calm and "
           "busy (MMPP, x3); 2 h")
def _flash_crowd(rng: np.random.Generator) -> WorkloadSpec:
    duration = 7200.0
    n = int(rng.integers(64, 193))
    workload = powerlaw_workload(n, float(rng.uniform(25.0, 60.0)), alpha=float(rng.uniform(0.8, 1.2)),
                                 ranks=(8, 16, 32), rng=rng, duration_s=duration)
    by_rate = sorted(workload.adapters, key=lambda a: -a.rate)
    head, tail = by_rate[: n // 4], by_rate[n // 4:]
    schedule: list = []
    for _ in range(int(rng.integers(3, 7))):
        length = float(rng.uniform(300.0, 1200.0))
        start = float(rng.uniform(600.0, duration - 600.0 - length))
        for _ in range(int(rng.integers(1, 4))):
            pool = tail if rng.random() < 0.7 else head
            adapter = pool[int(rng.integers(len(pool)))]
            factor = float(rng.uniform(3.0, 12.0)) / max(adapter.rate, 1e-3)
            schedule.append(Flash((adapter.id,), start, length, factor))
    busy = rng.choice(len(head), size=min(len(head), int(rng.integers(4, 9))), replace=False)
    schedule.append(MMPP(tuple(head[int(i)].id for i in busy), (1.0, 3.0), ((0.0, 1 / 900), (1 / 300, 0.0)),
                         seed=int(rng.integers(2**31))))
    return workload.with_schedule(tuple(schedule))


@_scenario("drift-v0", "64-192 adapters of equal mean rate, 30-80 req/s in all, Zipf popularity (alpha 0.8-1.3) "
           "whose ranks are partly re-shuffled (10-40% of them) every 15-30 min; 4 h")
def _drift(rng: np.random.Generator) -> WorkloadSpec:
    n = int(rng.integers(64, 193))
    workload = powerlaw_workload(n, float(rng.uniform(30.0, 80.0)), alpha=0.0, ranks=(8, 16, 32), rng=rng,
                                 duration_s=14_400.0)
    drift = Drift(tuple(a.id for a in workload.adapters), period_s=float(rng.choice([900.0, 1200.0, 1800.0])),
                  alpha=float(rng.uniform(0.8, 1.3)), fraction=float(rng.uniform(0.1, 0.4)),
                  seed=int(rng.integers(2**31)))
    return workload.with_schedule((drift,))
