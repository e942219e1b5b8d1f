"""Fitted histogram gradient boosting models predicted together, in a few numpy operations per tree level.

scikit-learn's ``HistGradientBoosting*.predict`` validates its input, then asks its trees one at a time (a
Python call each, about 10 us): on the handful of rows fast mode scores per epoch (one per replica), that fixed
cost of 1.5 ms for the surrogate's two models of 100 trees was most of an epoch's time. :class:`FlatForests`
keeps every tree's nodes in flat arrays and moves all (tree, row) pairs down one level per step, the deepest
trees first (a tree leaves the walk after its depth); it then adds each row's leaf values to the model's
baseline tree by tree, in scikit-learn's order, so the predictions are bit-identical to scikit-learn's
(``tests/test_surrogate.py`` checks them on the training rows and on rows with missing values).

It reads the fitted trees (``_predictors``, ``_baseline_prediction``, ``_loss``), which scikit-learn does not
document: :meth:`FlatForests.of` returns None for any model it cannot mirror exactly (another estimator,
categorical features, several trees per iteration), and callers then use scikit-learn's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor


class FlatForests:
    """The trees of several fitted models over the same features, walked together (module doc)."""

    def __init__(self, models: Sequence[Any]) -> None:
        self.models = tuple(models)
        trees = [[p.nodes for (p,) in model._predictors] for model in self.models]
        self.tree_counts = [len(t) for t in trees]
        nodes = [n for t in trees for n in t]
        sizes = np.array([len(n) for n in nodes])
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = np.concatenate(nodes)
        leaf = flat["is_leaf"].astype(bool)
        index = np.arange(flat.size)
        offset = np.repeat(roots, sizes)
        # A walk holds 2 x node (2 x node + 1 once it knows it goes left), so each node's test and children are
        # stored twice; a leaf is its own child either way, so a walk can step past it.
        right = np.where(leaf, index, flat["right"] + offset)
        left = np.where(leaf, index, flat["left"] + offset)
        self.children = 2 * np.column_stack([right, left]).ravel().astype(np.intp)
        self.feature = np.repeat(np.where(leaf, 0, flat["feature_idx"]).astype(np.intp), 2)
        self.threshold = np.repeat(np.where(leaf, np.inf, flat["num_threshold"]), 2)
        self.missing_left = np.repeat(flat["missing_go_to_left"].astype(bool), 2)
        self.value = np.repeat(flat["value"], 2)
        depth = np.array([int(n["depth"].max()) for n in nodes])
        self.order = np.argsort(-depth, kind="stable")  # deepest first: the trees still walking are a prefix
        self.restore = np.argsort(self.order)
        self.roots = 2 * roots[self.order].astype(np.intp)
        self.walking = [int((depth > level).sum()) for level in range(int(depth.max(initial=0)))]
        self.baselines = [float(model._baseline_prediction.ravel()[0]) for model in self.models]

    @classmethod
    def of(cls, *models: Any) -> FlatForests | None:
        """The models' trees, or None when one is not a fitted single-output histogram gradient boosting model
        without categorical features (module doc)."""
        for model in models:
            if not isinstance(model, HistGradientBoostingRegressor | HistGradientBoostingClassifier):
                return None
            if (getattr(model, "n_trees_per_iteration_", None) != 1 or getattr(model, "is_categorical_", 1) is not None
                    or getattr(model, "_preprocessor", 1) is not None):
                return None
        return cls(models)

    def raw_predict(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each model's raw prediction (baseline plus its trees' leaf values, added tree by tree), shape (n,)."""
        rows = np.ascontiguousarray(rows, np.float64)
        n, width = rows.shape
        values = rows.ravel()
        start = np.arange(n) * width
        missing = bool(np.isnan(values).any())
        node = np.repeat(self.roots[:, None], n, axis=1)  # (trees, rows)
        for k in self.walking:
            part = node[:k]
            value = values[self.feature[part] + start]
            goes_left = value <= self.threshold[part]
            if missing:
                goes_left |= np.isnan(value) & self.missing_left[part]
            node[:k] = self.children[part + goes_left]
        leaves = self.value[node][self.restore]
        out, first = [], 0
        for count, baseline in zip(self.tree_counts, self.baselines, strict=True):
            terms = np.vstack([np.full((1, n), baseline), leaves[first:first + count]])
            out.append(np.cumsum(terms, axis=0)[-1])  # sequential, as scikit-learn adds them
            first += count
        return out

    def predict(self, rows: np.ndarray) -> list[np.ndarray]:
        """What each model's ``predict`` (regressors) or ``predict_proba`` (classifiers) gives for ``rows``."""
        return [model._loss.predict_proba(raw) if is_classifier(model) else model._loss.link.inverse(raw)
                for model, raw in zip(self.models, self.raw_predict(rows), strict=True)]
