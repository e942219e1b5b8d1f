"""Train an SB3 agent on an adaptergym environment.

    python -m agents.train --env adaptergym/AdapterPlacement-v0 --algo maskable_ppo --steps 200000 [--seed S]
        [--out DIR] [--env-kwarg scenario=uniform-small ...] [any TrainConfig field as --field-name VALUE]

Vectorised environments on the training split, SB3's CheckpointCallback and EvalCallback (held-out test-split
seeds, the same ones at every evaluation; sb3-contrib's MaskableEvalCallback for masked algorithms), CSV logs and
TensorBoard events when tensorboard is installed (``tensorboard --logdir OUT/logs``), the final model, and a
learning curve. The run's folder is described in :mod:`agents.run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import LinearSchedule

from agents.cli import Parser, key_value, run
from agents.config import ALGORITHMS, TrainConfig, default_config
from agents.curve import plot_learning_curve
from agents.envs import RewindSeeds, evaluation_env, make_env, resolve_scorer, training_envs
from agents.run import CHECKPOINTS, CONFIG, CURVE, EVAL, LOGS, MODEL, TrainedAgent

log = logging.getLogger(__name__)

#: TrainConfig fields passed to the algorithm's constructor when it takes them.
HYPERPARAMETERS = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef")


def heldout_seeds(config: TrainConfig) -> list[int]:
    """The first ``eval_episodes`` test-split seeds of the environment's scenario (never trained on)."""
    env = make_env(config.env, **config.env_kwargs, scorer=config.scorer)
    seeds = env.unwrapped.scenario.test_seeds  # type: ignore[attr-defined]
    env.close()
    return list(seeds[: config.eval_episodes])


def new_model(config: TrainConfig, env: GymEnv, verbose: int = 0) -> BaseAlgorithm:
    """An untrained model of ``config`` (its algorithm, hyperparameters, network and seed) on ``env``."""
    algorithm = ALGORITHMS[config.algo]
    accepted = inspect.signature(algorithm.__init__).parameters
    hyper = {name: getattr(config, name) for name in HYPERPARAMETERS if name in accepted}
    if config.lr_schedule == "linear":
        hyper["learning_rate"] = LinearSchedule(config.learning_rate, 0.0, 1.0)
    arch = {"pi": list(config.net_arch_pi), "vf": list(config.net_arch_vf)}
    return algorithm("MultiInputPolicy", env, seed=config.seed, verbose=verbose, device="cpu",
                     policy_kwargs={"net_arch": arch}, **hyper)


def train(config: TrainConfig, out: str | Path, *, verbose: int = 0, progress_bar: bool = False) -> TrainedAgent:
    """Train ``config`` and write the run to ``out``; returns the trained model (saved as ``out/model.zip``).

    Args:
        config: what to train (``scorer="fast"`` is resolved here and saved resolved).
        out: the run's folder (created; an existing run there is overwritten).
        verbose: SB3's verbosity (1 prints a table per update).
        progress_bar: show SB3's progress bar (tqdm and rich).

    Raises:
        ConfigError: an environment argument the environment does not take, or a scorer it cannot use.
    """
    out = Path(out)
    config = dataclasses.replace(config, scorer=resolve_scorer(config.scorer, config.env_kwargs))
    seeds = heldout_seeds(config)
    torch.set_num_threads(config.torch_threads)  # process-wide, as torch has it
    out.mkdir(parents=True, exist_ok=True)
    config.to_json(out / CONFIG)
    envs = training_envs(config, config.scorer)
    eval_env = evaluation_env(config, config.scorer, seeds)
    try:
        model = new_model(config, envs, verbose)
        formats = ["csv"] + (["tensorboard"] if importlib.util.find_spec("tensorboard") else [])
        model.set_logger(configure(str(out / LOGS), formats + (["stdout"] if verbose else [])))
        evaluation = (MaskableEvalCallback if config.masked else EvalCallback)(
            eval_env, n_eval_episodes=len(seeds), eval_freq=max(config.eval_freq // config.n_envs, 1),
            log_path=str(out / EVAL), deterministic=True, verbose=0, callback_after_eval=RewindSeeds())
        checkpoints = CheckpointCallback(max(config.checkpoint_freq // config.n_envs, 1), str(out / CHECKPOINTS),
                                         name_prefix="model")
        model.learn(config.steps, callback=CallbackList([checkpoints, evaluation]), progress_bar=progress_bar)
        model.save(out / MODEL)
    finally:
        envs.close()
        eval_env.close()
    plot_learning_curve(out)
    return TrainedAgent(model, config, out / MODEL)


# ---------------------------------------------------------------------------------------------- command line
def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated layer widths, e.g. 64,64") from None


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field (``--n-envs`` for ``n_envs``), defaulting to that (env, algo)'s default."""
    parser = Parser(prog="python -m agents.train", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "env_kwargs":
            parser.add_argument("--env-kwarg", dest="env_kwargs", type=key_value, action="append",
                                metavar="KEY=VALUE", help=f.metadata["help"])
        else:
            kind = _widths if isinstance(f.default, tuple) else type(f.default)
            parser.add_argument(flag, type=kind, default=None, help=f"{f.metadata['help']} (default: {f.default})")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<env>-<algo>-seed<S>)")
    parser.add_argument("--verbose", action="store_true", help="print SB3's table after every update")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _main(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    if "env_kwargs" in given:
        given["env_kwargs"] = dict(given["env_kwargs"])
    config = default_config(**given)
    out = args.out or Path("runs") / f"{config.env.split('/')[-1]}-{config.algo}-seed{config.seed}"
    path = train(config, out, verbose=int(args.verbose), progress_bar=args.progress).checkpoint
    log.info("model: %s\nlearning curve: %s\nevaluate: python -m agents.evaluate --checkpoint %s", path,
             out / CURVE, path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.train``; returns the exit code (0 ok, 1 bad configuration, 2 bad flag)."""
    return run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
