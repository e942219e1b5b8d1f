"""AdapterFleet-v0 and its packer: checker, seeding, vector envs, masks, reward terms, options, errors."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import adaptergym  # noqa: F401  (registers the environments)
from adaptergym.envs.fleet import TERMS
from adaptergym.envs.fleet_control import FILLS, HYSTERESIS, SLOT_FRACTIONS
from adaptergym.envs.fleet_packer import KnobPacker, Knobs, effective_count
from adaptergym.errors import ConfigError, InvalidAction, UnknownName, UnknownScenario, WorkloadError
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec

FLEET = "adaptergym/AdapterFleet-v0"
#: Six adapters, 20 minutes, fixed lengths: a few seconds of twin per episode.
SMALL = WorkloadSpec(tuple(AdapterSpec(f"a{i}", 16, r) for i, r in enumerate((6.0, 4.0, 2.0, 1.0, 0.5, 0.5))),
                     LengthSpec("fixed", input_tokens=200, output_tokens=100), duration_s=1200.0)
SENSIBLE = np.array([FILLS.index(0.5), HYSTERESIS.index(0.25), SLOT_FRACTIONS.index(1.0)])
pytestmark = pytest.mark.filterwarnings("ignore:.*maximum value is infinity", "ignore:.*minimum value is -infinity")


def episode(env, actions, seed=0, options=None):
    """(observations, rewards, infos) of one seeded episode; ``actions(step, mask)`` chooses."""
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos, done, k = [obs], [], [info], False, 0
    while not done:
        obs, reward, done, truncated, info = env.step(actions(k, info["action_mask"]))
        assert truncated is False
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        k += 1
    return observations, rewards, infos


def fixed(action):
    return lambda _, __: np.asarray(action)


# ---------------------------------------------------------------------------------------------- the checker
@pytest.mark.parametrize("scorer", ["analytic", "surrogate", "twin"])
def test_checker_passes_with_every_scorer(scorer):
    env = gym.make(FLEET, scorer=scorer, scenario="flash-crowd-v0", render_mode="ansi")
    check_env(env.unwrapped)
    env.close()
    env.close()


def test_twin_mode_reports_latency_and_prices_missed_slos():
    env = gym.make(FLEET, scorer="twin", epoch_s=300.0, slo_ttft_ms=50.0)
    _, rewards, infos = episode(env, fixed(SENSIBLE), options={"workload": SMALL})
    assert infos[0]["scorer"] == "twin" and len(rewards) == 3  # 4 epochs: the first is served by reset
    for info, reward in zip(infos[1:], rewards, strict=True):
        assert info["scorer"] == "twin" and info["slo_share"] is not None and info["p99_ttft_ms"] > 0
        missed = info["requests"] > 0 and info["slo_share"] < 1.0
        assert (info["reward_terms"]["slo"] < 0) == missed
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
    summary = infos[-1]["episode"]
    assert summary["scorer"] == "twin" and summary["epochs"] == 4 and summary["p99_ttft_ms"] > 0


# ---------------------------------------------------------------------------------------------- rewards
def test_reward_is_the_sum_of_its_terms_each_from_the_epochs_figures():
    env = gym.make(FLEET, scorer="analytic", scenario="flash-crowd-v0", starved_weight=3.0, load_cost_s=7.0,
                   restart_cost_s=50.0)
    actions = [np.array([f, 0, 0]) for f in (10, 0, 0, 10, 3)] * 10  # one slot per 8 adapters: some starve
    _, rewards, infos = episode(env, lambda k, _: actions[k], seed=4)
    starved = changed = False
    for info, reward in zip(infos[1:], rewards, strict=True):
        terms = info["reward_terms"]
        assert list(terms) == list(TERMS)
        assert reward == pytest.approx(sum(terms.values()), abs=1e-12)
        assert terms["gpu"] == pytest.approx(-info["gpu_seconds"] / 3600)
        assert terms["starvation"] == pytest.approx(-3.0 * info["starved_adapter_s"] / 3600)
        assert terms["migration"] == pytest.approx(-7.0 * info["loads"] / 3600)
        assert terms["restart"] == pytest.approx(-50.0 * (info["cold_starts"] + info["restarts"]) / 3600)
        assert terms["slo"] == 0.0 and info["slo_share"] is None  # fast mode models no latency
        starved |= info["starved_adapters"] > 0
        changed |= info["cold_starts"] > 0
    assert starved and changed  # the terms were exercised, not all zero
    summary = infos[-1]["episode"]
    gpu_hours = -sum(i["reward_terms"]["gpu"] for i in infos[1:])
    first = summary["gpu_hours"] - gpu_hours  # the epoch reset served is in the totals, in no reward
    assert 0 < first <= 16 * 300 / 3600


def test_a_sensible_fixed_action_beats_a_degenerate_one():
    """Fill 1.0 with one slot per 8 adapters packs tight and swaps adapters: it starves, and the reward says so."""
    env = gym.make(FLEET, scorer="surrogate", scenario="diurnal-v0", split="test")
    tight = np.array([FILLS.index(1.0), 0, SLOT_FRACTIONS.index(0.125)])
    for seed in (1_000_000, 1_000_001):
        _, good, good_info = episode(env, fixed(SENSIBLE), seed=seed, options={"scenario_seed": seed})
        _, bad, bad_info = episode(env, fixed(tight), seed=seed, options={"scenario_seed": seed})
        assert sum(good) > sum(bad)
        assert good_info[-1]["episode"]["gpu_hours"] > bad_info[-1]["episode"]["gpu_hours"]
        assert good_info[-1]["episode"]["starved_adapter_minutes"] < bad_info[-1]["episode"]["starved_adapter_minutes"]


# ---------------------------------------------------------------------------------------------- masks
def test_fills_that_need_more_than_max_replicas_are_masked_replaced_and_penalised():
    heavy = SMALL.with_adapters(tuple(AdapterSpec(a.id, a.rank, a.rate * 10) for a in SMALL.adapters))
    env = gym.make(FLEET, scorer="analytic", max_replicas=2, epoch_s=300.0)
    _, info = env.reset(seed=0, options={"workload": heavy})
    mask = info["action_mask"]
    assert mask.shape == (len(FILLS) + len(HYSTERESIS) + len(SLOT_FRACTIONS),)
    assert np.array_equal(mask, env.unwrapped.action_masks())
    fills = mask[: len(FILLS)]
    assert fills[-1] and not fills[0] and list(fills) == sorted(fills)  # masked: the smallest fills
    assert mask[len(FILLS):].all()
    first_valid = int(np.argmax(fills))
    _, reward, _, _, step = env.step(np.array([0, 0, 3]))
    assert reward == pytest.approx(sum(step["reward_terms"].values()))
    assert f"used fill {FILLS[first_valid]}" in step["invalid_action"] and step["knobs"]["fill"] == FILLS[first_valid]
    assert step["reward_terms"]["invalid_action"] == -0.1 and step["replicas_planned"] <= 2
    _, _, _, _, valid = env.step(np.array([len(FILLS) - 1, 0, 3]))
    assert valid["invalid_action"] == "" and valid["reward_terms"]["invalid_action"] == 0.0


def test_actions_outside_the_space_raise_and_a_finished_episode_asks_for_reset():
    env = gym.make(FLEET, scorer="analytic", epoch_s=600.0).unwrapped
    env.reset(seed=0, options={"workload": SMALL})
    for bad in (np.array([len(FILLS), 0, 0]), np.array([0, -1, 0]), np.array([0, 0]), np.array([0.5, 1.0, 0.0]), "x"):
        with pytest.raises(InvalidAction, match="not in MultiDiscrete"):
            env.step(bad)
    assert env.step(SENSIBLE)[2]  # 2 epochs: one step
    with pytest.raises(ResetNeeded):
        env.step(SENSIBLE)


# ---------------------------------------------------------------------------------------------- reproducibility
def test_same_seed_gives_identical_episodes_and_another_seed_another():
    env = gym.make(FLEET, scorer="surrogate")
    rng_actions = np.random.default_rng(0).integers(0, [len(FILLS), len(HYSTERESIS), len(SLOT_FRACTIONS)], (80, 3))
    first = episode(env, lambda k, _: rng_actions[k], seed=7)
    again = episode(env, lambda k, _: rng_actions[k], seed=7)
    other = episode(env, lambda k, _: rng_actions[k], seed=8)
    for a, b in zip(first[0], again[0], strict=True):
        assert all(np.array_equal(a[key], b[key]) for key in a)
    assert first[1] == again[1]  # identical floats
    assert [i["episode"] for i in first[2][-1:]] == [i["episode"] for i in again[2][-1:]]
    assert first[2][0]["workload_seed"] != other[2][0]["workload_seed"]


def test_options_pin_the_workload_family_and_seed_and_bad_ones_are_named(tmp_path):
    env = gym.make(FLEET, scorer="analytic", epoch_s=300.0)
    path = tmp_path / "w.json"
    path.write_text(json.dumps(SMALL.to_dict()))
    for form in (SMALL, SMALL.to_dict(), str(path)):
        _, info = env.reset(seed=0, options={"workload": form})
        assert info["workload_seed"] == -1 and info["num_adapters"] == 6 and info["epochs"] == 4
    _, info = env.reset(seed=0, options={"scenario": "drift-v0", "scenario_seed": 12})
    assert info["scenario"] == "drift-v0" and info["workload_seed"] == 12 and info["epochs"] == 48
    with pytest.raises(ValueError, match="unknown key"):
        env.reset(seed=0, options={"seed": 3})
    with pytest.raises(UnknownScenario):
        env.reset(seed=0, options={"scenario": "drift-v9"})
    with pytest.raises(WorkloadError, match="epoch_s"):
        gym.make(FLEET, scorer="analytic", epoch_s=1200.0).reset(seed=0, options={"workload": SMALL})


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"scorer": "fast"}, "scorer: 'fast' is not one of"),
    ({"forecaster": "prophet"}, "prophet"),
    ({"max_replicas": 0}, "max_replicas"),
    ({"starved_weight": -1.0}, "starved_weight"),
    ({"scenario": " "}, "scenario"),
])
def test_bad_arguments_fail_in_one_line_naming_the_field(kwargs, needle):
    with pytest.raises((ConfigError, UnknownName)) as caught:
        gym.make(FLEET, **kwargs)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- vector envs
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_match_single_envs(mode):
    kwargs = {"scorer": "analytic", "scenario": "flash-crowd-v0"}
    envs = gym.make_vec(FLEET, num_envs=2, vectorization_mode=mode, **kwargs)
    _, info = envs.reset(seed=[1, 2])
    assert np.array_equal(np.stack(envs.call("action_masks")), info["action_mask"])
    actions = np.array([SENSIBLE, [len(FILLS) - 1, 0, 0]])
    rewards = np.zeros(2)
    for _ in range(23):  # flash-crowd-v0: 24 epochs, 23 steps
        _, reward, terminated, truncated, info = envs.step(actions)
        rewards += reward
        assert not truncated.any()
    assert terminated.all()
    envs.close()
    single = gym.make(FLEET, **kwargs)
    expected = [sum(episode(single, fixed(a), seed=s)[1]) for a, s in zip(actions, (1, 2), strict=True)]
    assert rewards.tolist() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------- observation
def test_observation_is_fixed_size_whatever_the_adapter_count_and_describes_the_fleet():
    env = gym.make(FLEET, scorer="analytic", top_k=4, max_replicas=3, epoch_s=300.0, render_mode="ansi")
    obs, info = env.reset(seed=0, options={"workload": SMALL})
    assert {k: v.shape for k, v in obs.items()} == {"fleet": (15,), "adapters": (24,), "replicas": (30,)}
    assert env.observation_space.contains(obs)
    adapters, replicas = obs["adapters"].reshape(4, 6), obs["replicas"].reshape(3, 10)
    assert list(adapters[:, 2]) == sorted(adapters[:, 2], reverse=True)  # the highest planned loads first
    assert adapters[0, 2] == pytest.approx(6.0 * 300 / info["capacity_tok_s"], rel=0.5)
    assert replicas[0, 0] == 1.0 and info["replica_capacity"] == "saturated throughput"  # no edges for fixed lengths
    big, _ = env.reset(seed=0, options={"scenario": "diurnal-v0"})
    assert {k: v.shape for k, v in big.items()} == {k: v.shape for k, v in obs.items()}
    assert "replica" in env.render() and "starved" in env.render()


# ---------------------------------------------------------------------------------------------- the packer
def packer(capacity=1.0, adapters=6, max_replicas=8):
    ids = tuple(f"a{i}" for i in range(adapters))
    return KnobPacker(ids, np.full(adapters, 16), np.full(adapters + 1, capacity), max_replicas, (1, 2, 4, 8, 16), 16)


def test_replica_count_grows_at_once_and_shrinks_only_past_the_hysteresis():
    p = packer()
    half = Knobs(fill=0.5, hysteresis=0.25, slot_fraction=1.0)
    assert p.replica_count(1.0, effective_count(np.ones(6)), 0, half) == 2  # 1.0 GPU at half fill
    assert p.replica_count(1.2, 6.0, 2, half) == 3  # grows at once
    assert p.replica_count(0.9, 6.0, 3, half) == 3  # 0.9 * 1.25 = 1.125 still needs 3 at 0.5
    assert p.replica_count(0.75, 6.0, 3, half) == 2  # 0.9375 fits on 2
    assert p.replica_count(0.9, 6.0, 3, Knobs(0.5, 0.0, 1.0)) == 2
    assert p.replica_count(100.0, 6.0, 3, half) == 8  # at most max_replicas


def test_capacity_by_adapter_count_sizes_the_fleet():
    """A replica of many adapters carries less: with capacity halving from 1 to 6 adapters, 6 equal adapters
    need twice the replicas that one adapter of the same total load needs."""
    ids = tuple(f"a{i}" for i in range(6))
    capacity = np.array([1.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    p = KnobPacker(ids, np.full(6, 16), capacity, 8, (1, 2, 4, 8), 8)
    knobs = Knobs(1.0, 0.0, 1.0)
    assert effective_count(np.full(6, 0.25)) == pytest.approx(6.0) and effective_count(np.zeros(6)) == 1.0
    assert p.replica_count(1.5, 6.0, 0, knobs) == 2  # 3 adapters each: capacity 0.8, 1.6 >= 1.5
    assert p.replica_count(1.5, 1.0, 0, knobs) == 2  # one adapter: capacity 1.0
    assert p.replica_count(1.2, 6.0, 0, knobs) == 2 and p.replica_count(0.95, 1.0, 0, knobs) == 1


def test_packing_is_sticky_splits_hot_adapters_and_relieves_overfull_replicas():
    p = packer()
    knobs = Knobs(fill=0.5, hysteresis=0.25, slot_fraction=1.0)
    load = np.array([0.6, 0.1, 0.1, 0.1, 0.05, 0.05])  # a0 alone exceeds the fill: two copies
    plan = p.plan(load, knobs, {})
    assert len(plan) == 2 and sum("a0" in s.adapters for s in plan.values()) == 2
    assert all(s.max_lora_rank == 16 and s.max_loras >= len(s.adapters) for s in plan.values())
    loads = {rid: sum(load[int(a[1:])] / (2 if a == "a0" else 1) for a in s.adapters) for rid, s in plan.items()}
    assert max(loads.values()) <= 0.5 + 1e-9
    assert p.plan(load, knobs, plan) == plan  # the same load changes nothing
    hotter = load.copy()
    hotter[3] = 0.5  # one replica is now over the fill: relief and a third replica
    grown = p.plan(hotter, knobs, plan)
    assert len(p.replicas) == 3 and set(plan) < set(grown)
    kept = [a for rid in plan for a in plan[rid].adapters if a in grown[rid].adapters]
    assert len(kept) >= 6  # most adapters stayed where they were


def test_new_replicas_are_made_before_old_ones_break():
    p = packer()
    knobs = Knobs(fill=0.5, hysteresis=0.0, slot_fraction=1.0)
    first = p.plan(np.full(6, 0.1), knobs, {})  # 0.6 GPU: 2 replicas
    assert len(first) == 2
    moved = p.plan(np.full(6, 0.3), knobs, first)  # 1.8 GPU: 4 replicas, two new
    new = set(moved) - set(first)
    assert len(new) == 2
    held_by_running = {a for rid in first for a in moved[rid].adapters}
    assert held_by_running == {f"a{i}" for i in range(6)}  # what moved to new replicas stays on the old ones
    settled = p.plan(np.full(6, 0.3), knobs, moved)  # the new ones serve now: the old ones let go
    assert sum(len(s.adapters) for s in settled.values()) == 6 and set(settled) == set(moved)
