"""Screen step-time forms against Qwen-2.5-7B's training runs before any goes into the engines.

Replays the `ml_modelling` training runs (1,800 s each, as calibration does) with the pure-Python reference engine,
instrumented to keep every step's distinct adapters, decode sequences, prefill tokens and the inter-token gaps it
closes. A candidate adds ``extra(step)`` ms to every step; to first order a run's mean ITL moves by the gap-weighted
mean of that extra, and the linear terms move as in ``adaptergym.calibration.end_to_end``. Each form is fitted in
that linearisation as the calibration fits (least absolute relative error, its solver; priors at the shipped
profile's values, the decode benchmark's terms as firmly as calibration holds them and the others as firmly as the
profile's own fit did, its ``base_prior``, or ``--base-prior``) and its training mean-ITL MAPE printed next to a
refit of today's form on the same rows (a max()/min() form's ratio is searched on a grid, its coefficient fitted).
The held-out runs are not read. Takes about 3 minutes on the 2-core dev box. See docs/validation.md, "Qwen's mean
ITL".

    python examples/step_form_screen.py [--runs ../shared/data/real_runs.csv] [--profile P] [--base-prior S]
"""

import argparse
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

import adaptergym.twin.frameworks as frameworks
from adaptergym import load_profile
from adaptergym.calibration import GUESSED, MEASURED
from adaptergym.calibration.end_to_end import _mean_features, _robust_fit, capped
from adaptergym.profile import STEP_FEATURES
from adaptergym.real_runs import read_runs, replays
from adaptergym.twin.engine import ReferenceEngine
from adaptergym.validation import replay

STEPS: list[tuple[float, ...]] = []  # (steps, decode, prefill, adapters x steps, gaps) of each step or decode jump


class LoggingEngine(ReferenceEngine):
    def _log_counts(self, counts: tuple[float, ...], gaps: int) -> None:
        STEPS.append((counts[0], counts[1], counts[2], counts[4], gaps))
        super()._log_counts(counts, gaps)


parser = argparse.ArgumentParser(description="screen step-time forms on Qwen-2.5-7B's training runs")
parser.add_argument("--runs", default="../shared/data/real_runs.csv", help="real-runs CSV")
parser.add_argument("--profile", default="qwen-2.5-7b-instruct", help="profile to replay and refit from")
parser.add_argument("--base-prior", type=float, default=None,
                    help="prior strength of the terms no micro-benchmark measures (default: the profile's own)")
args = parser.parse_args()
if args.base_prior is not None and not 0 <= args.base_prior < float("inf"):
    parser.error(f"--base-prior {args.base_prior}: must be a finite number >= 0")
frameworks.ReplicaEngine = LoggingEngine  # vLLM's framework builds this class
profile = load_profile(args.profile)
if "decode" not in profile.provenance.get("terms", {}):
    parser.error(f"--profile {profile.name}: no decode micro-benchmark fit in its provenance; screen a vLLM profile "
                 "fitted by adaptergym calibrate")
items, _ = replays(read_runs(args.runs))
items = capped([i for i in items if i.model == profile.model and i.group.startswith("ml_modelling/")
                and i.status == "ok" and "mean_itl_ms" in i.measured], 1800.0)
runs = []
for item in tqdm(items, desc="replaying"):
    STEPS.clear()
    p = replay(item, profile)
    if p.predicted_status != "ok" or not np.isfinite(p.predicted.get("mean_itl_ms", np.nan)):
        continue
    k, decode, prefill, adapters, gaps = np.array(STEPS, float).T
    config = item.config.resolved(profile)
    step = SimpleNamespace(a=adapters / k, t=(decode + prefill) / k, d=decode / k, slots=config.max_loras,
                           rank=config.max_lora_rank / 16)  # per step of the run: adapters, tokens, decode tokens
    runs.append((item.measured["mean_itl_ms"], p.predicted["mean_itl_ms"], _mean_features(profile, item, p.counts),
                 step, gaps * k))

y, now, x = (np.array([r[i] for r in runs]) for i in range(3))
weight_sum = np.array([r[4].sum() for r in runs])
current = np.array(profile.step_time.vector())
fitted = current != 0  # the profile's terms (a term it does not list stays out of every fit)
x, current = x[:, fitted], current[fitted]
measured = set(profile.provenance["terms"]["decode"]["coefficients"])
base_prior = args.base_prior if args.base_prior is not None else \
    profile.provenance["terms"]["step_time"].get("base_prior", GUESSED)
names = [name for name, kept in zip(STEP_FEATURES, fitted, strict=True) if kept]
strengths = [MEASURED if name in measured else base_prior for name in names]
prior_rows = np.array([np.eye(len(current))[j] * s * len(y) / abs(c)
                       for j, (s, c) in enumerate(zip(strengths, current, strict=True)) if s > 0])
prior_rows = prior_rows.reshape(-1, len(current))  # no rows at all when every prior is 0


def fit(*features) -> float:
    """Training mean-ITL MAPE of the calibration's fit of today's terms plus one coefficient per feature
    ``feature(step)`` added to every step (each >= 0), in the linearisation."""
    extra = np.array([[(w * f(step)).sum() for f in features] for _, _, _, step, w in runs]).reshape(len(y), -1)
    extra /= weight_sum[:, None]
    a = np.hstack([x, extra]) / y[:, None]
    b = (y - now + x @ current) / y
    start = np.concatenate([current, np.zeros(extra.shape[1])])
    priors = np.hstack([prior_rows, np.zeros((len(prior_rows), extra.shape[1]))])
    c = np.array(_robust_fit(np.vstack([a, priors]), np.concatenate([b, priors @ start]), start))
    return 100 * float(np.mean(np.abs(a @ c - b)))


# Each max()/min() form is a coefficient times a feature with one ratio in it; the ratio is searched on a grid.
ratios = [0.5, 1, 2, 4, 8, 16, 32, 64]  # batched tokens per adapter at which the two sides of the max meet
forms = {
    "today's terms, refitted": {"": fit()},
    "per adapter, first K of a step": {f"K={k}": fit(lambda s, k=k: np.minimum(s.a, k)) for k in (8, 16, 32, 64, 128)},
    "roofline floor: c max(0, f0 + f1 adapters - tokens)": {
        f"f0={f0},f1={f1}": fit(lambda s, f0=f0, f1=f1: np.maximum(0.0, f0 + f1 * s.a - s.t))
        for f0 in (0, 64, 256, 1024) for f1 in ratios},
    "adapter reads hidden by token work: m max(0, adapters - tokens/r)": {
        f"r={r}": fit(lambda s, r=r: np.maximum(0.0, s.a - s.t / r)) for r in ratios},
    "LoRA overlap: p adapters - m min(adapters, tokens/r)": {
        f"r={r}": fit(lambda s: s.a, lambda s, r=r: -np.minimum(s.a, s.t / r)) for r in ratios},
    "per token, first K of each adapter: min(tokens, K adapters)": {
        f"K={k}": fit(lambda s, k=k: np.minimum(s.t, k * s.a)) for k in (1, 2, 4, 8, 16, 32)},
    "per decode token, first K of each adapter: min(decode, K adapters)": {
        f"K={k}": fit(lambda s, k=k: np.minimum(s.d, k * s.a)) for k in (1, 2, 4, 8, 16, 32)},
    "per token while every slot serves the batch: tokens [adapters = slots]": {
        "": fit(lambda s: s.t * (s.a >= s.slots))},
    "prefill/decode split: decode, prefill tokens x rank/16": {
        "decode": fit(lambda s: s.d * s.rank), "prefill": fit(lambda s: (s.t - s.d) * s.rank)},
    "per slot per 1,000 tokens, less at higher rank: -slots tokens/1000 (rank/16 - 1)": {
        "": fit(lambda s: -s.slots * s.t / 1000 * (s.rank - 1))},
}
print(f"{len(y)} training runs; mean-ITL MAPE of today's profile {100 * np.mean(np.abs(now / y - 1)):.2f}%, "
      f"in the calibration's linearisation after each fit (base prior {base_prior}; best, then the three best "
      "settings):")
for name, errors in forms.items():
    best = sorted(errors, key=errors.get)[:3]
    print(f"{name:82s} {errors[best[0]]:.2f}%  " + ", ".join(f"{k} {errors[k]:.2f}%" for k in best if k))
