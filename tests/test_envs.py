"""The Gymnasium environments: checker, reproducibility, pinned workloads, rewards, masks, invalid actions,
vector envs, rendering, scorers and speed."""

from __future__ import annotations

import subprocess
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import adaptergym
from adaptergym import scoring
from adaptergym.envs import ENV_IDS
from adaptergym.errors import ConfigError, InvalidAction, WorkloadError
from adaptergym.scenarios import get_scenario
from adaptergym.scoring import AnalyticScorer, GpuPlan
from adaptergym.server_capacity import mean_request_tokens, reference_capacity, saturated_throughput
from adaptergym.twin import ServerConfig, check_startup
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec

PLACEMENT, CACHING = "adaptergym/AdapterPlacement-v0", "adaptergym/AdapterCaching-v0"
#: The one-decision environments these tests share (AdapterFleet-v0 has its own, tests/test_fleet_env.py).
PLACING = (CACHING, PLACEMENT)
FIXED = LengthSpec("fixed", input_tokens=200, output_tokens=100)
# Spaces have loads without an upper bound (a workload can need any number of GPUs); the checker warns on inf.
pytestmark = pytest.mark.filterwarnings("ignore:.*maximum value is infinity")


def workload(rates, ranks=None, lengths=FIXED) -> WorkloadSpec:
    ranks = ranks or [16] * len(rates)
    return WorkloadSpec(tuple(AdapterSpec(f"a{i}", r, q) for i, (q, r) in enumerate(zip(rates, ranks, strict=True))),
                        lengths, duration_s=60)


LIGHT = workload([0.5, 0.4, 0.3, 0.2])  # about 0.3 GPUs of load
HEAVY = workload([60.0, 60.0, 60.0, 60.0])  # several GPUs of load


def run(env, actions_for, seed=0, options=None):
    """One seeded episode; ``actions_for(step, mask)`` chooses. Returns (observations, masks, rewards, last info)."""
    obs, info = env.reset(seed=seed, options=options)
    observations, masks, rewards = [obs], [info["action_mask"]], []
    done, k = False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(actions_for(k, info["action_mask"]))
        assert truncated is False
        observations.append(obs)
        masks.append(info["action_mask"])
        rewards.append(reward)
        done, k = terminated, k + 1
    return observations, masks, rewards, info


def random_masked(env, seed):
    """Uniform among each action component's valid choices (the mask concatenates them)."""
    rng = np.random.default_rng(seed)
    splits = np.cumsum(env.action_space.nvec)[:-1]

    def act(_, mask):
        return np.array([rng.choice(np.flatnonzero(part)) for part in np.split(mask, splits)])

    return act


def constant(gpu, level):
    return lambda _, __: np.array([gpu, level])


# ---------------------------------------------------------------------------------------------- registration
def test_every_id_is_registered_with_a_lazy_string_entry_point():
    assert set(ENV_IDS) <= set(gym.registry)
    for env_id in ENV_IDS:
        assert isinstance(gym.spec(env_id).entry_point, str)
    code = ("import sys, adaptergym, gymnasium; assert 'adaptergym.envs.placement' not in sys.modules; "
            "assert 'adaptergym.envs.caching' not in sys.modules; assert 'adaptergym.envs.fleet' not in sys.modules; "
            "gymnasium.spec('adaptergym/AdapterPlacement-v0')")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("env_id", PLACING)
@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_env_checker_passes(env_id, render_mode):
    env = gym.make(env_id, scorer="twin", window_s=30, render_mode=render_mode, scenario="uniform-small")
    check_env(env.unwrapped)
    env.close()
    env.close()


REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("adaptergym/"))


def nan_fields(value, path="info"):
    """Paths of NaN floats anywhere in an info value (NaN != NaN breaks gymnasium's determinism check)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nan_fields(v, f"{path}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nan_fields(v, f"{path}[{i}]")]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return [path] if np.isnan(value).any() else []
    return [path] if isinstance(value, float) and value != value else []


@pytest.mark.parametrize("env_id", REGISTERED)
def test_every_registered_env_passes_the_checker_as_made_by_default(env_id):
    """As a user makes it (default scorer: the surrogate where one is trained): the checker passes, and no info
    along a whole episode holds a NaN."""
    env = gym.make(env_id)
    check_env(env.unwrapped)
    _, info = env.reset(seed=3)
    infos, done = [info], False
    while not done:
        _, _, terminated, truncated, info = env.step(random_masked(env, 3)(None, env.unwrapped.action_masks()))
        infos.append(info)
        done = terminated or truncated
    assert [p for i in infos for p in nan_fields(i)] == []
    env.close()


# ---------------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("env_id", PLACING)
def test_same_seed_gives_identical_observations_masks_and_rewards(env_id):
    env = gym.make(env_id, scorer="twin", window_s=30, scenario="uniform-small")
    first = run(env, random_masked(env, 3), seed=11)
    again = run(env, random_masked(env, 3), seed=11)
    other = run(env, random_masked(env, 3), seed=12)
    for a, b in zip(first[0], again[0], strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(a, b) for a, b in zip(first[1], again[1], strict=True))
    assert first[2] == again[2]  # identical floats, not approximately equal
    assert first[3]["served_tok_s"] == again[3]["served_tok_s"]
    assert any(not np.array_equal(first[0][0][k], other[0][0][k]) for k in first[0][0])


def test_reset_without_seed_continues_the_stream_through_the_train_split():
    env = gym.make(PLACEMENT, scorer="twin", scenario="zipf-large")
    seeds = {env.reset(seed=5)[1]["workload_seed"]} | {env.reset()[1]["workload_seed"] for _ in range(4)}
    assert len(seeds) == 5 and all(s in range(10_000) for s in seeds)
    test_env = gym.make(PLACEMENT, scorer="twin", scenario="zipf-large", split="test")
    assert test_env.reset(seed=5)[1]["workload_seed"] in get_scenario("zipf-large").test_seeds


# ---------------------------------------------------------------------------------------------- pinned workloads
def test_options_workload_pins_the_workload_in_every_accepted_form(tmp_path):
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=4)
    path = tmp_path / "w.json"
    path.write_text(__import__("json").dumps(LIGHT.to_dict()))
    for form in (LIGHT, LIGHT.to_dict(), str(path)):
        obs, info = env.reset(seed=0, options={"workload": form})
        assert info["workload_seed"] == -1 and info["num_adapters"] == 4
        capacity = reference_capacity(adaptergym.load_profile(None), FIXED)
        expected = LIGHT.total_rate * 300 / capacity  # fixed lengths: 300 tokens a request
        assert obs["fleet"][0] == pytest.approx(expected, rel=1e-6)
        assert obs["adapter"][0] == pytest.approx(0.5 * 300 / capacity, rel=1e-6)  # highest rate comes first
        assert obs["upcoming"][0:6:2] == pytest.approx(np.array([0.4, 0.3, 0.2]) * 300 / capacity, rel=1e-6)
    assert mean_request_tokens(FIXED) == 300


def test_options_scenario_seed_picks_that_workload_and_bad_options_are_named():
    env = gym.make(CACHING, scorer="twin")
    _, info = env.reset(seed=0, options={"scenario_seed": 1_000_003})
    assert info["workload_seed"] == 1_000_003
    assert info["num_adapters"] == len(get_scenario("paper-ml-test").workload(1_000_003).adapters)
    with pytest.raises(ValueError, match="unknown key"):
        env.reset(options={"workloads": LIGHT})
    with pytest.raises(WorkloadError, match="max_adapters"):
        gym.make(CACHING, scorer="twin", max_adapters=2).reset(options={"workload": LIGHT})
    burst = {**LIGHT.to_dict(), "arrival": {"kind": "burst"}, "num_requests": 10}
    with pytest.raises(WorkloadError, match="burst"):
        env.reset(options={"workload": burst})
    with pytest.raises(WorkloadError, match="rank 1024 does not start"):
        env.reset(options={"workload": workload([1.0], ranks=[1024])})


# ---------------------------------------------------------------------------------------------- placement rewards
def test_gpus_objective_rewards_free_gpus_and_punishes_starvation():
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=4, window_s=120)
    *_, rewards, info = run(env, constant(0, 4), options={"workload": LIGHT})  # all on GPU 0, 16 slots
    assert rewards[:-1] == [0.0, 0.0, 0.0] and rewards[-1] == 0.75  # 3 of 4 GPUs left free
    assert info["gpus_used"] == 1 and info["starved_gpus"] == 0 and info["scorer"] == "twin"
    assert info["gpu_adapters"].tolist() == [4, 0, 0, 0] and info["gpu_max_loras"].tolist() == [16, 0, 0, 0]
    assert info["gpu_served_ratio"][0] > 0.9 and info["metrics"]["startup"] == "ok"
    spread = run(env, lambda k, mask: np.array([k % 2, 4]), options={"workload": LIGHT})
    assert spread[2][-1] == 0.5 and spread[3]["gpu_adapters"].tolist() == [2, 2, 0, 0]
    *_, rewards, info = run(env, constant(0, 4), options={"workload": HEAVY})
    assert info["starved_gpus"] == 1 and rewards[-1] == -1.0 and info["gpu_starved"].tolist() == [1, 0, 0, 0]
    assert info["served_ratio"] < 0.5


def test_latency_and_weighted_objectives_follow_the_documented_formula():
    for objective, weight in (("latency", 0.5), ("weighted", 0.3)):
        env = gym.make(PLACEMENT, scorer="twin", num_gpus=4, objective=objective, weight=weight,
                       latency_scale_ms=500.0, window_s=120)
        *_, rewards, info = run(env, constant(0, 4), options={"workload": LIGHT})
        latency = 500.0 / (500.0 + info["p99_ttft_ms"])
        expected = latency if objective == "latency" else 0.3 * 0.75 + 0.7 * latency
        assert info["p99_ttft_ms"] > 0 and rewards[-1] == pytest.approx(expected, rel=1e-12)
        assert info["score"] == rewards[-1] and info["objective"] == objective


def test_gpu_budget_masks_gpus_beyond_it():
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=4, objective="latency", gpu_budget=2, window_s=30)
    masks = run(env, lambda k, mask: np.array([np.flatnonzero(mask[:4])[-1], 4]), options={"workload": LIGHT})[1]
    assert all(not m[2:4].any() for m in masks[:-1])
    assert masks[0][:4].tolist() == [True, False, False, False]  # only the first empty GPU is offered
    assert masks[1][:4].tolist() == [True, True, False, False]
    with pytest.raises(ConfigError, match="gpu_budget"):
        gym.make(PLACEMENT, gpu_budget=5, num_gpus=4)
    with pytest.raises(ValueError, match="split"):
        gym.make(PLACEMENT, split="validation")


# ---------------------------------------------------------------------------------------------- invalid actions
def test_masked_gpu_is_redirected_penalised_and_reported():
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=4, window_s=30, invalid_action_penalty=0.25)
    env.reset(seed=0, options={"workload": LIGHT})
    obs, reward, terminated, _, info = env.step(np.array([3, 4]))  # GPU 3 is masked: GPU 0 is still empty
    assert reward == -0.25 and not terminated
    assert "GPU 3 is masked" in info["invalid_action"] and "placed on GPU 0" in info["invalid_action"]
    assert obs["gpus"].reshape(4, 8)[:, 0].tolist() == [1, 0, 0, 0]
    _, reward, _, _, info = env.step(np.array([1, 4]))
    assert reward == 0.0 and info["invalid_action"] == ""


def test_max_loras_beyond_the_profile_is_lowered_penalised_only_when_masked():
    # Default profile: rank 32 starts with at most 96 of the levels, rank 8 with 384.
    profile = adaptergym.load_profile(None)
    assert check_startup(profile, ServerConfig(max_loras=96, max_lora_rank=32)).ok
    assert not check_startup(profile, ServerConfig(max_loras=128, max_lora_rank=32)).ok
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=2, window_s=30, invalid_action_penalty=0.1)
    levels = list(env.unwrapped.levels)
    pinned = workload([1.0, 0.5], ranks=[32, 8])
    _, info = env.reset(seed=0, options={"workload": pinned})
    assert info["action_mask"][2:].tolist() == [x <= 96 for x in levels]
    _, reward, _, _, info = env.step(np.array([0, levels.index(384)]))  # masked at rank 32
    assert reward == pytest.approx(-0.1) and "set to 96" in info["invalid_action"]
    assert info["action_mask"][2:].all()  # the rank-8 adapter may ask for any level
    _, reward, terminated, _, info = env.step(np.array([0, levels.index(256)]))  # valid, but GPU 0 is rank 32
    assert terminated and info["invalid_action"] == "" and info["gpu_max_loras"][0] == 96
    assert info["gpu_max_lora_rank"][0] == 32 and reward == info["score"]


@pytest.mark.parametrize("env_id", PLACING)
def test_actions_outside_the_space_raise_and_stepping_a_finished_episode_asks_for_reset(env_id):
    env = gym.make(env_id, scorer="twin", window_s=30).unwrapped
    env.reset(seed=0, options={"workload": LIGHT})
    high = env.action_space.nvec
    for bad in (np.array([high[0], 0]), np.array([0, high[1]]), np.array([-1, 0]), np.array([0]), np.array([0.5, 1.0]),
                "x"):
        with pytest.raises(InvalidAction, match="not in MultiDiscrete"):
            env.step(bad)
    done = False
    while not done:
        done = env.step(np.array([0, 1]))[2]
    with pytest.raises(ResetNeeded):
        env.step(np.array([0, 1]))


# ---------------------------------------------------------------------------------------------- caching rewards
def test_caching_reward_is_served_share_and_penalises_starvation_and_no_start():
    env = gym.make(CACHING, scorer="twin", window_s=120)
    levels = list(env.unwrapped.levels)
    _, info = env.reset(seed=0, options={"workload": LIGHT})
    assert info["action_mask"][:4].all() and not info["action_mask"][4:384].any()
    _, reward, terminated, _, info = env.step(np.array([1, levels.index(8)]))  # the two busiest adapters
    share = (0.5 + 0.4) / 1.4
    assert terminated and info["num_served"] == 2 and not info["starved"] and info["startup"] == "ok"
    assert reward == pytest.approx(min(info["served_ratio"], 1.0) * share, rel=1e-12) and 0.9 * share <= reward
    env.reset(seed=0, options={"workload": HEAVY})
    _, reward, _, _, info = env.step(np.array([3, levels.index(8)]))
    assert info["starved"] and reward == pytest.approx(info["served_ratio"] - 1.0, rel=1e-12) and reward < -0.4
    # Ranks 8 and 32: 192 slots is allowed (starts at rank 8) but not with the rank-32 adapter served.
    env.reset(seed=0, options={"workload": workload([1.0, 0.5], ranks=[32, 8])})
    _, reward, _, _, info = env.step(np.array([1, levels.index(192)]))
    assert info["startup"] != "ok" and info["max_lora_rank"] == 32 and reward == -1.0
    assert info["invalid_action"] == "" and "metrics" in info


def test_caching_invalid_count_and_level_are_lowered_and_penalised():
    env = gym.make(CACHING, scorer="twin", window_s=60, invalid_action_penalty=0.2)
    env.reset(seed=0, options={"workload": workload([1.0, 0.5], ranks=[32, 32])})
    _, reward, _, _, info = env.step(np.array([10, len(env.unwrapped.levels) - 1]))
    assert info["num_served"] == 2 and info["max_loras"] == 96
    assert "serving 11 adapters" in info["invalid_action"] and "set to 96" in info["invalid_action"]
    assert reward == pytest.approx(info["score"] - 0.4)


# ---------------------------------------------------------------------------------------------- vector envs
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_match_single_envs(mode):
    kwargs = {"scorer": "twin", "window_s": 30, "num_gpus": 4}
    envs = gym.make_vec(PLACEMENT, num_envs=2, vectorization_mode=mode, **kwargs)
    _, info = envs.reset(seed=[1, 2], options={"workload": LIGHT})
    masks = np.stack(envs.call("action_masks"))
    assert masks.shape == (2, 4 + 13) and np.array_equal(masks, info["action_mask"])
    rewards = np.zeros(2)
    for step in range(4):
        _, reward, terminated, truncated, info = envs.step(np.array([[step % 2, 4], [0, 3]]))
        rewards += reward
        assert not truncated.any() and terminated.all() == (step == 3)
    envs.close()
    single = gym.make(PLACEMENT, **kwargs)
    expected = [sum(run(single, lambda k, m, a=a: np.array([k % 2, 4]) if a == 0 else np.array([0, 3]), seed=s,
                        options={"workload": LIGHT})[2]) for a, s in ((0, 1), (1, 2))]
    assert rewards.tolist() == expected and info["gpus_used"].tolist() == [2, 1]


def test_caching_vector_env_autoresets_each_one_step_episode():
    """Gymnasium's default next-step autoreset: a step after a terminal one resets (reward 0) that sub-env."""
    envs = gym.make_vec(CACHING, num_envs=2, vectorization_mode="sync", scorer="twin", window_s=30,
                        scenario="uniform-small")
    _, first = envs.reset(seed=[3, 4])
    action = np.array([[0, 3], [1, 3]])
    _, reward, terminated, _, info = envs.step(action)
    assert terminated.all() and info["scorer"].tolist() == ["twin", "twin"] and np.all((reward >= -1) & (reward <= 1))
    _, reward, terminated, _, again = envs.step(action)
    assert not terminated.any() and reward.tolist() == [0.0, 0.0]
    assert not np.array_equal(again["workload_seed"], first["workload_seed"])  # fresh workloads
    assert envs.step(action)[2].all()
    envs.close()


# ---------------------------------------------------------------------------------------------- rendering
def test_render_ansi_table_and_rgb_plot():
    env = gym.make(PLACEMENT, scorer="twin", num_gpus=4, window_s=30, render_mode="ansi")
    run(env, lambda k, _: np.array([k % 2, 4]), options={"workload": LIGHT})
    text = env.render()
    lines = text.splitlines()
    assert "4/4 adapters placed" in lines[0] and lines[1].split() == ["gpu", "adapters", "max_loras", "rank", "load",
                                                                      "served", "starved"]
    assert lines[2].split()[:4] == ["0", "2", "16", "16"] and lines[3].split()[:4] == ["1", "2", "16", "16"]
    assert "scored by twin: 2 GPUs, 0 starved" in lines[-1]
    for env_id in PLACING:
        env = gym.make(env_id, scorer="twin", window_s=30, render_mode="rgb_array")
        env.reset(seed=0, options={"workload": LIGHT})
        before = env.render()
        env.step(np.array([0, 1]))
        image = env.render()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert (image < 200).any() and not np.array_equal(before, image)


# ---------------------------------------------------------------------------------------------- scorers
class _FakeSurrogate:
    """Predicts half the offered tokens of rates summed in feature 0 and flags starvation when that is > 10."""

    def predict(self, features):
        return {"throughput": features[:, 0] * 300 * 0.95, "starved_prob": (features[:, 0] > 10).astype(float)}


@pytest.fixture
def fake_surrogate(monkeypatch):
    module = types.ModuleType("adaptergym.surrogate")
    module.load_surrogate = lambda name: _FakeSurrogate()
    module.gpu_features = lambda rates, ranks, max_loras, lengths: np.array([rates.sum(), ranks.max(), max_loras])
    monkeypatch.setitem(sys.modules, "adaptergym.surrogate", module)
    return module


def test_surrogate_scorer_scores_and_says_so(fake_surrogate):
    env = gym.make(PLACEMENT, scorer="surrogate", num_gpus=4)
    _, info = env.reset(seed=0, options={"workload": LIGHT})
    assert info["scorer"] == "surrogate"
    *_, rewards, info = run(env, constant(0, 4), options={"workload": LIGHT})
    assert info["scorer"] == "surrogate" and rewards[-1] == 0.75 and info["p99_ttft_ms"] is None
    assert info["served_ratio"] == pytest.approx(0.95) and "metrics" not in info
    *_, rewards, info = run(env, constant(0, 4), options={"workload": HEAVY})
    assert rewards[-1] == -1.0 and info["starved_gpus"] == 1
    assert gym.make(PLACEMENT).unwrapped.scorer.name == "surrogate"  # auto prefers a trained surrogate
    assert gym.make(PLACEMENT, objective="latency").unwrapped.scorer.name == "twin"  # ... unless latency counts
    with pytest.raises(ConfigError, match="predicts no latency"):
        gym.make(PLACEMENT, objective="weighted", scorer="surrogate")


def test_without_a_trained_surrogate_auto_is_the_twin_and_surrogate_is_an_error(monkeypatch):
    monkeypatch.setattr(scoring, "load_surrogate_scorer", lambda profile: None)
    assert gym.make(CACHING).unwrapped.scorer.name == "twin"
    with pytest.raises(ConfigError, match=r"no trained surrogate.*scorer='twin'"):
        gym.make(CACHING, scorer="surrogate")
    with pytest.raises(ConfigError, match="scorer: 'fast'"):
        gym.make(CACHING, scorer="fast")


def test_analytic_scorer_is_close_to_the_twin_at_saturation_and_exact_on_start_up():
    profile = adaptergym.load_profile(None)
    analytic = AnalyticScorer(profile)
    sharegpt = LengthSpec("sharegpt")
    for adapters, rank, slots, most in ((8, 16, 8, 1.25), (16, 16, 16, 1.25), (64, 16, 16, 2.0)):
        estimate = analytic.capacity_tok_s(GpuPlan(tuple(range(adapters)), slots, rank), np.full(adapters, rank),
                                           sharegpt)
        # Optimistic always; far more so when adapters outnumber slots (it ignores the loads that churn brings).
        assert 1.0 < estimate / saturated_throughput(profile, sharegpt, adapters, rank, slots) < most
    # Rank-32 slots cost compute: capacity falls by the twin's factor; 128 of them do not start, so it serves nothing.
    rank16 = analytic.capacity_tok_s(GpuPlan((0,), 8, 16), np.array([16]), sharegpt)
    rank32 = analytic.capacity_tok_s(GpuPlan((0,), 8, 32), np.array([32]), sharegpt)
    twin_factor = saturated_throughput(profile, sharegpt, 1, 32, 8) / saturated_throughput(profile, sharegpt, 1, 16, 8)
    assert rank32 < rank16 and rank32 / rank16 == pytest.approx(twin_factor, abs=0.05)
    assert analytic.capacity_tok_s(GpuPlan((0,), 128, 32), np.array([32]), sharegpt) == 0.0
    env = gym.make(PLACEMENT, scorer="analytic", num_gpus=4)
    *_, rewards, info = run(env, constant(0, 4), options={"workload": LIGHT})
    assert info["scorer"] == "analytic" and rewards[-1] == 0.75 and info["served_ratio"] == 1.0
    *_, rewards, info = run(env, constant(0, 4), options={"workload": HEAVY})
    capacity = analytic.capacity_tok_s(GpuPlan((0, 1, 2, 3), 16, 16), np.full(4, 16), FIXED)
    assert rewards[-1] == -1.0 and info["served_tok_s"] == pytest.approx(capacity)
    with pytest.raises(ConfigError, match="scorer='analytic' predicts no latency"):
        gym.make(PLACEMENT, objective="latency", scorer="analytic")


