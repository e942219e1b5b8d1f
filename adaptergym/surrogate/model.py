"""The surrogate: tree models distilled from a twin sweep, predicting what one GPU serves for a set of adapters.

Two pairs of scikit-learn models read the same per-GPU features (:mod:`.features`):

* ``tree``: a shallow ``DecisionTreeRegressor`` / ``DecisionTreeClassifier`` (depth 6), readable as rules
  (:meth:`Surrogate.rules`), as in the published pipeline;
* ``accurate`` (default): ``HistGradientBoostingRegressor`` / ``HistGradientBoostingClassifier``.

The regressors predict the log of the *served ratio* (served / offered tokens, capped at 1): a lightly loaded
GPU is predicted to serve what it is offered however little that is, and an overloaded one is off by a factor
rather than by an absolute share (with a plain ratio, an error of 0.04 is small for a GPU serving 90% of its
load and doubles the throughput of one serving 4%). Throughput is the ratio times the offered load. The
classifiers predict the twin's starvation verdict. Start-up is not learned: it is the twin's exact memory
check for the row's ``max_loras`` and ``max_lora_rank`` (a GPU that does not start serves nothing and is
starved when offered anything). Only rows that started train the models.

Fitting runs single-threaded (OpenMP limited to one thread): on a small shared machine, gradient boosting's
thread pool costs far more than it saves. The boosted pair predicts through :mod:`.forest` (both models' trees in
one numpy walk, scikit-learn's results bit for bit, several times faster on the few rows fast mode asks about);
the trees predict through scikit-learn, also single-threaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, export_text

from adaptergym.errors import ConfigError, DataError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.profile import TwinProfile
from adaptergym.surrogate.features import COLUMN, FEATURES, gpu_features
from adaptergym.surrogate.forest import FlatForests
from adaptergym.sweep.points import recipe_from_row, slot_levels
from adaptergym.threads import one_openmp_thread
from adaptergym.twin import ServerConfig, check_startup
from adaptergym.workload import LengthSpec

MODELS = ("accurate", "tree")
#: Depth of the interpretable trees (the published pipeline's trees are of this size).
TREE_DEPTH = 6
#: A GPU is called starved when its predicted starvation probability reaches this.
STARVED_PROBABILITY = 0.5
#: Served ratios below this are learned as this (log target).
RATIO_FLOOR = 1e-4
#: Levels whose predicted throughput is within this fraction of the best count as ties (the safest wins).
TIE_TOLERANCE = 0.01


def dataset_features(frame: pd.DataFrame) -> np.ndarray:
    """The feature rows of a sweep dataset (one per row, :data:`FEATURES` order), built from each row's
    workload recipe and ``max_loras`` (once per workload)."""
    needed = ("sweep_seed", "workload_id", "max_loras", "num_adapters", "rate_kind", "rate_values", "total_rate",
              "alpha", "rank_cycle", "lengths")
    missing = [c for c in needed if c not in frame]
    if missing:
        raise DataError(f"surrogate data: no column(s) {missing}; pass a CSV written by `adaptergym sweep`")
    rows = np.empty((len(frame), len(FEATURES)))
    for idx in frame.groupby(["sweep_seed", "workload_id"], sort=False).indices.values():
        recipe = recipe_from_row(frame.iloc[idx[0]])
        rows[idx] = gpu_features(*recipe.arrays(), frame["max_loras"].to_numpy()[idx], recipe.lengths)
    return rows


@dataclass
class _Pair:
    """A log-served-ratio regressor and a starvation classifier of one family."""

    ratio: RegressorMixin
    starved: ClassifierMixin
    forests: FlatForests | None = field(default=None, repr=False)  # both, walked together, when they can be

    def fit(self, x: np.ndarray, ratio: np.ndarray, starved: np.ndarray) -> _Pair:
        self.ratio.fit(x, ratio)
        if np.unique(starved).size > 1:
            self.starved.fit(x, starved)
        else:  # one class only (tiny data): its constant probability
            self.starved = _Constant(float(starved[0]))
        self.forests = FlatForests.of(self.ratio, self.starved)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The log served ratio and the starvation probability of feature rows ``x`` (scikit-learn's, bit for bit;
        :mod:`.forest` computes them in one walk when it can)."""
        if self.forests is not None:
            log_ratio, proba = self.forests.predict(x)
        else:
            with one_openmp_thread():
                log_ratio, proba = self.ratio.predict(x), self.starved.predict_proba(x)
        return log_ratio, proba[:, -1]


@dataclass
class _Constant:
    """A classifier of a training set with a single class."""

    p: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1.0 - self.p), np.full(len(x), self.p)])


@dataclass
class Surrogate:
    """Per-GPU throughput and starvation of one profile, learned from its twin sweep.

    Build with :meth:`fit` (or :func:`adaptergym.surrogate.load_surrogate` for a shipped profile).
    """

    profile: TwinProfile
    models: dict[str, _Pair]
    training_rows: int
    _startup: dict[tuple[int, int], bool] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(cls, data: pd.DataFrame, profile: TwinProfile, random_state: int = 0) -> Surrogate:
        """Train both model families on the rows of ``data`` (a sweep dataset) whose server started.

        Raises:
            DataError: no row started, or the data is not a sweep dataset.
        """
        started = data[data["startup"] == "ok"]
        if started.empty:
            raise DataError("surrogate data: no row has startup 'ok'; sweep more points")
        x = dataset_features(started)
        ratio = np.log(np.clip(started["served_ratio"].to_numpy(np.float64), RATIO_FLOOR, 1.0))
        starved = started["starved"].astype(bool).to_numpy()
        models = {
            "tree": _Pair(DecisionTreeRegressor(max_depth=TREE_DEPTH, min_samples_leaf=5, random_state=random_state),
                          DecisionTreeClassifier(max_depth=TREE_DEPTH, min_samples_leaf=5,
                                                 random_state=random_state)),
            "accurate": _Pair(HistGradientBoostingRegressor(max_iter=100, random_state=random_state),
                              HistGradientBoostingClassifier(max_iter=100, random_state=random_state)),
        }
        with one_openmp_thread():
            for pair in models.values():
                pair.fit(x, ratio, starved)
        return cls(profile, models, len(started))

    def _starts(self, rows: np.ndarray) -> np.ndarray:
        """The twin's start-up check per row (cached per (max_loras, max_lora_rank))."""
        keys = rows[:, [COLUMN["max_loras"], COLUMN["max_lora_rank"]]].astype(np.int64).tolist()
        return np.array([self._start_ok(slots, rank) for slots, rank in keys], bool)

    def _start_ok(self, slots: int, rank: int) -> bool:
        """Whether vLLM starts with ``max_loras`` ``slots`` at ``max_lora_rank`` ``rank`` (0: no adapters)."""
        key = (slots, rank)
        if key not in self._startup:
            self._startup[key] = rank == 0 or check_startup(
                self.profile, ServerConfig(max_loras=max(slots, 1), max_lora_rank=rank)).ok
        return self._startup[key]

    def predict(self, rows: np.ndarray, model: str = "accurate") -> Mapping[str, np.ndarray]:
        """Predictions for feature rows (shape (n, len(FEATURES)), from :func:`gpu_features`).

        Returns:
            ``throughput`` (served tokens/s), ``starved_prob`` (in [0, 1]), ``served_ratio`` and
            ``startup_ok`` (the twin's exact start-up check), each of shape (n,).
        """
        if model not in self.models:
            raise ConfigError(f"model: {model!r} is not one of {', '.join(MODELS)}")
        rows = np.atleast_2d(np.asarray(rows, np.float64))
        if rows.shape[1] != len(FEATURES):
            raise ConfigError(f"rows: {rows.shape[1]} columns, expected {len(FEATURES)} (gpu_features order)")
        log_ratio, prob = self.models[model].predict(rows)
        ratio = np.minimum(np.exp(log_ratio), 1.0)
        ok = self._starts(rows)
        offered = rows[:, COLUMN["offered_tok_s"]]
        return {
            "throughput": np.where(ok, ratio * offered, 0.0),
            "starved_prob": np.where(offered <= 0, 0.0, np.where(ok, prob, 1.0)),
            "served_ratio": np.where(ok, ratio, 0.0),
            "startup_ok": ok,
        }

    def serves(self, rows: np.ndarray, model: str = "accurate") -> np.ndarray:
        """Whether each row's GPU is predicted to serve its load: it starts, its starvation probability is below
        :data:`STARVED_PROBABILITY` and its predicted throughput is at least 90% of what it is offered (the
        papers' rule). Shape (n,)."""
        rows = np.atleast_2d(np.asarray(rows, np.float64))
        predicted = self.predict(rows, model)
        return ((predicted["starved_prob"] < STARVED_PROBABILITY)
                & (predicted["throughput"] >= (1.0 - STARVATION_THRESHOLD) * rows[:, COLUMN["offered_tok_s"]]))

    def best_levels(self, groups: Sequence[tuple[np.ndarray, np.ndarray]], lengths: LengthSpec,
                    model: str = "accurate") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best ``max_loras`` of each (rates, ranks) group, all groups in one model call.

        Each group is tried at its sweep levels (``slot_levels``: the levels below its adapter count, and the
        count). The best level starts, is predicted not starved if any such level exists, has the highest
        predicted throughput (levels within 1% of it tie), and among ties the lowest starvation
        probability, then the fewest slots. With no level that starts, the smallest level.

        Returns:
            per group: the level, its predicted throughput (tokens/s) and starvation probability.
        """
        blocks = [gpu_features(rates, ranks, np.array(slot_levels(max(len(rates), 1))), lengths)
                  for rates, ranks in groups]
        sizes = np.array([len(b) for b in blocks])
        if not blocks:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        predicted = self.predict(np.concatenate(blocks), model)
        out = np.empty((len(blocks), 3))
        for g, (start, size) in enumerate(zip(np.cumsum(sizes) - sizes, sizes, strict=True)):
            part = slice(start, start + size)
            out[g] = _choose(blocks[g][:, COLUMN["max_loras"]], predicted["throughput"][part],
                             predicted["starved_prob"][part], predicted["startup_ok"][part])
        return out[:, 0].astype(np.int64), out[:, 1], out[:, 2]

    def best_max_loras(self, rates: np.ndarray, ranks: np.ndarray, lengths: LengthSpec,
                       model: str = "accurate") -> int:
        """The slot level with the best predicted non-starved throughput for one GPU (see :meth:`best_levels`)."""
        return int(self.best_levels([(np.asarray(rates), np.asarray(ranks))], lengths, model)[0][0])

    def rules(self) -> str:
        """The shallow trees as text rules (``sklearn.tree.export_text``)."""
        pair = self.models["tree"]
        parts = [f"log served ratio (log(served / offered tokens)), depth {TREE_DEPTH}:",
                 export_text(pair.ratio, feature_names=list(FEATURES), decimals=3)]
        if isinstance(pair.starved, DecisionTreeClassifier):
            parts += [f"starved (the twin's verdict), depth {TREE_DEPTH}:",
                      export_text(pair.starved, feature_names=list(FEATURES), decimals=3)]
        return "\n".join(parts)

    def describe(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "training_rows": self.training_rows, "features": list(FEATURES)}


def _choose(levels: np.ndarray, throughput: np.ndarray, starved_prob: np.ndarray,
            ok: np.ndarray) -> tuple[float, float, float]:
    """(level, throughput, starved_prob) of the best level of one group (rules in ``best_levels``)."""
    if not ok.any():
        return float(levels[0]), 0.0, 1.0
    candidates = ok & (starved_prob < STARVED_PROBABILITY)
    if not candidates.any():
        candidates = ok
    best = throughput[candidates].max()
    tied = np.flatnonzero(candidates & (throughput >= (1.0 - TIE_TOLERANCE) * best))
    pick = tied[np.lexsort((levels[tied], starved_prob[tied]))[0]]
    return float(levels[pick]), float(throughput[pick]), float(starved_prob[pick])
