"""AdapterPlacement-v1: the surrogate packer takes what its fill allows, a fixed good action packs like the
published greedy, the observation tells what each action would do, and the budget and arguments are enforced.
(The checker, seeded reproducibility, invalid actions and rendering run on every registered id in test_envs.)"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from adaptergym import load_profile
from adaptergym.errors import ConfigError
from adaptergym.scenarios import get_scenario
from baselines import get_policy

PACKING = "adaptergym/AdapterPlacement-v1"
SEEDS = range(5)  # training seeds of zipf-large: 64-192 adapters, 2-3 GPUs of load


def play(env, action, seed):
    """One episode of a constant action on the scenario workload of ``seed``; the last info and the step infos."""
    env.reset(seed=seed, options={"scenario_seed": seed})
    steps, done = [], False
    while not done:
        _, _, done, _, info = env.step(np.array(action))
        steps.append(info)
    return info, steps


def action_of(env, fill, fraction):
    return env.unwrapped.fills.index(fill), env.unwrapped.slot_fractions.index(fraction)


@pytest.fixture(scope="module")
def surrogate_env():
    return gym.make(PACKING, scorer="surrogate")


def test_a_gpu_takes_the_longest_prefix_within_its_fill_of_the_capacity(surrogate_env):
    env = surrogate_env.unwrapped
    env.reset(seed=3, options={"scenario_seed": 3})
    options, loads = env._options, np.cumsum(env._loads)  # the queue's cumulative load, reference GPUs
    capacity = options.capacity_tok_s / env.capacity_tok_s
    assert np.all((capacity > 0.3) & (capacity < 1.5))  # a GPU's worth, give or take (1 = one reference GPU)
    assert np.all(np.diff(options.take, axis=0) >= 0)  # more fill never takes less
    for f, fill in enumerate(env.fills):
        for s in range(len(env.slot_fractions)):
            take, served = options.take[f, s], options.served_prefix[s]
            assert take == 1 or loads[take - 1] <= fill * capacity[s] * (1 + 1e-9)
            # The next one would not fit, or a fill of at most 1 stops at the served prefix (longer ones starve).
            assert take == len(loads) or loads[take] > fill * capacity[s] or (fill <= 1 and take == served)
            assert fill > 1 or served == 0 or take <= served
    served = options.served_prefix
    assert np.all((served == 0) | (loads[np.maximum(served, 1) - 1] <= capacity * (1 + 1e-9)))


def test_fill_one_packs_like_the_published_greedy_and_a_fill_of_090_does_not_starve_the_twin(surrogate_env):
    """Fill 1 with a slot per adapter is the greedy's next-fit to the surrogate's edge: the same GPU counts as
    ``greedy`` without its twin repair, give or take one (measured: equal on training seeds 0-7 but seed 3, where
    greedy's rank-grouped packing takes 3 and fill 1 takes 2, which the twin verifies; greedy's repair shrinks its
    own to 2). With 10% headroom the twin (120-s fleet run, the evaluation's judge) starves none of them, and they
    cost GPUs: as many as fill 1 or more, at most one more than greedy (measured: 3, 3, 2, 2, 3 on seeds 0-4)."""
    twin = gym.make(PACKING, scorer="twin")
    scenario, profile = get_scenario("zipf-large"), load_profile(None)
    for seed in SEEDS:
        greedy = get_policy("greedy", verify=False).place(scenario.workload(seed), profile, seed=seed).gpus
        edge, _ = play(surrogate_env, action_of(surrogate_env, 1.0, 1.0), seed)
        assert abs(edge["gpus_used"] - greedy) <= 1, seed
        headroom, _ = play(twin, action_of(twin, 0.9, 1.0), seed)
        assert headroom["scorer"] == "twin" and headroom["starved_gpus"] == 0, seed
        assert edge["gpus_used"] <= headroom["gpus_used"] <= greedy + 1, seed


def test_the_observation_says_what_each_action_does(surrogate_env):
    env = surrogate_env.unwrapped
    obs, info = env.reset(seed=1, options={"scenario_seed": 1})
    assert info["action_mask"].all() and info["action_mask"].size == len(env.fills) + len(env.slot_fractions)
    fills, fractions = len(env.fills), len(env.slot_fractions)
    for action in ((8, 1), (0, 1), (5, 0)):
        obs, _ = env.reset(seed=1, options={"scenario_seed": 1})
        left, taken, later = obs["options"].reshape(fills, fractions, 3)[action]
        capacity = obs["capacity"].reshape(fractions, 2)[action[1], 0]
        assert later == np.ceil(left / (env.fills[action[0]] * capacity) - 1e-6)  # GPUs the rest needs at this fill
        after, _, _, _, step = env.step(np.array(action))
        assert np.log2(1 + step["gpu_adapters_taken"]) / 9 == pytest.approx(taken)
        assert after["workload"][1] == pytest.approx(left, abs=1e-6)  # load still queued
        assert step["gpu_slots"] == min(int(np.ceil(env.slot_fractions[action[1]] * step["gpu_adapters_taken"])),
                                        int(env._max_slots_of_rank[env._gpu_rank[0]]))
        assert env.observation_space.contains(after)


#: A workload of seed 1 of zipf-large offers 1.9 reference GPUs of load (one GPU's saturated throughput each); on two
#: GPUs, the first filled to 60% of its capacity, the last takes more than a GPU can serve at saturation.
#: (Seed 0, with 0.9 of them, starved there until the LoRA LRU refit raised what a GPU of many adapters serves.)
HEAVY_SEED, LOW_FILL = 1, (0, 1)


def test_the_last_gpu_of_the_budget_takes_what_is_left():
    env = gym.make(PACKING, scorer="surrogate", gpu_budget=2)
    info, steps = play(env, LOW_FILL, seed=HEAVY_SEED)
    assert len(steps) == 2 and info["gpus_used"] == 2
    assert sum(s["gpu_adapters_taken"] for s in steps) == len(get_scenario("zipf-large").workload(HEAVY_SEED).adapters)
    last = env.unwrapped._loads[steps[0]["gpu_adapters_taken"]:].sum()
    assert last > 1 / 0.9  # past the 90% rule at the saturated throughput: the last GPU must starve
    assert info["starved_gpus"] >= 1


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"fills": (0.9, 0.8)}, "fills"), ({"fills": ()}, "fills"), ({"slot_fractions": (0.5, 1.5)}, "slot_fractions"),
    ({"starvation_penalty": 0}, "starvation_penalty"), ({"gpu_budget": 9}, "gpu_budget"),
])
def test_bad_arguments_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        gym.make(PACKING, scorer="surrogate", **kwargs)


def test_starvation_penalty_scales_the_score_of_a_starved_placement():
    rewards = []
    for penalty in (1.0, 4.0):
        env = gym.make(PACKING, scorer="surrogate", gpu_budget=2, starvation_penalty=penalty)
        env.reset(seed=HEAVY_SEED, options={"scenario_seed": HEAVY_SEED})
        done = False
        while not done:
            _, reward, done, _, info = env.step(np.array(LOW_FILL))
        rewards.append(reward)
        assert reward == -penalty * info["starved_gpus"] / info["gpus_used"]
    assert rewards[1] == 4 * rewards[0] < 0


def test_a_finished_episode_exports_its_placement_for_verification(surrogate_env):
    info, _ = play(surrogate_env, (5, 1), seed=2)
    placement = surrogate_env.unwrapped.placement()
    workload = get_scenario("zipf-large").workload(2)
    assert placement.gpus == info["gpus_used"]
    assert [len(g.adapters) for g in placement.assignments] == info["gpu_adapters"][: placement.gpus].tolist()
    assert [g.max_loras for g in placement.assignments] == info["gpu_max_loras"][: placement.gpus].tolist()
    assert sorted(a for g in placement.assignments for a in g.adapters) == sorted(a.id for a in workload.adapters)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_match_single_envs(mode):
    workload = get_scenario("zipf-large").workload(4)
    kwargs = {"scorer": "twin", "window_s": 30}
    envs = gym.make_vec(PACKING, num_envs=2, vectorization_mode=mode, **kwargs)
    _, info = envs.reset(seed=[1, 2], options={"workload": workload})
    assert np.stack(envs.call("action_masks")).all() and info["action_mask"].shape == (2, 9 + 2)
    rewards, done = np.zeros(2), False
    while not done:
        _, reward, terminated, truncated, info = envs.step(np.array([[5, 1], [5, 1]]))
        rewards += reward
        assert not truncated.any() and terminated.all() == terminated.any()  # same workload, same steps
        done = terminated.all()
    envs.close()
    single = gym.make(PACKING, **kwargs)
    for k, seed in enumerate((1, 2)):
        single.reset(seed=seed, options={"workload": workload})
        total, finished = 0.0, False
        while not finished:
            _, reward, finished, _, last = single.step(np.array([5, 1]))
            total += reward
        assert rewards[k] == total and info["gpus_used"][k] == last["gpus_used"]
