"""Fitted histogram gradient boosting models predicted together, in a dozen numpy operations for all their trees.

scikit-learn's ``HistGradientBoosting*.predict`` validates its input, then asks its trees one at a time (a
Python call each, about 10 us): on the handful of rows fast mode scores per epoch (one per replica), that fixed
cost of 1.5 ms for the surrogate's two models of 100 trees was most of an epoch's time. :class:`FlatForests`
evaluates every tree at once the QuickScorer way (Lucchese et al., SIGIR 2015): number each tree's leaves left to
right; a node whose test fails (the row goes right) rules out the leaves of its left subtree, so the row's leaf is
the leftmost one no failing node rules out. A node fails when its feature's value is above its threshold, so,
with each feature's nodes sorted by threshold, the failing ones are a prefix; a precomputed table holds, per
feature and prefix length, the leaves left in every tree (a bit mask per tree), and a row's leaves are the AND
of one table row per feature (a missing value has its own row: the nodes that send it right). The leaf values
are then added to each model's baseline tree by tree, in scikit-learn's order, so the predictions are
bit-identical to scikit-learn's (``tests/test_surrogate.py`` checks them on the training rows and on rows with
missing values).

It reads the fitted trees (``_predictors``, ``_baseline_prediction``, ``_loss``), which scikit-learn does not
document: :meth:`FlatForests.of` returns None for any model it cannot mirror exactly (another estimator,
categorical features, several trees per iteration, more than 64 leaves in a tree), and callers then use
scikit-learn's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

#: Leaves a tree may have: one bit each in a mask of MASK_BITS.
MASK_BITS = 64


class FlatForests:
    """The trees of several fitted models over the same features, evaluated together (module doc)."""

    def __init__(self, models: Sequence[Any]) -> None:
        self.models = tuple(models)
        trees = [p.nodes for model in self.models for (p,) in model._predictors]
        self.tree_counts = [len(model._predictors) for model in self.models]
        self.baselines = [float(model._baseline_prediction.ravel()[0]) for model in self.models]
        leaves_most = max((int(nodes["is_leaf"].sum()) for nodes in trees), default=1)
        bits, self.mask_type = (32, np.uint32) if leaves_most <= 32 else (MASK_BITS, np.uint64)  # half the table
        everything = (1 << bits) - 1
        self.leaf_values = np.zeros((len(trees), bits))
        feature, threshold, tree, mask, missing_left = [], [], [], [], []  # one entry per split node
        for t, nodes in enumerate(trees):
            leaves, spans = _leaf_spans(nodes)
            self.leaf_values[t, : len(leaves)] = nodes["value"][leaves]
            for i in np.flatnonzero(nodes["is_leaf"] == 0).tolist():
                first, end = spans[int(nodes["left"][i])]
                feature.append(int(nodes["feature_idx"][i]))
                threshold.append(float(nodes["num_threshold"][i]))
                tree.append(t)
                mask.append(everything & ~(((1 << (end - first)) - 1) << first))  # its left subtree's leaves out
                missing_left.append(bool(nodes["missing_go_to_left"][i]))
        feature, threshold, tree = np.array(feature, np.intp), np.array(threshold), np.array(tree, np.intp)
        mask, missing_left = np.array(mask, self.mask_type), np.array(missing_left, bool)
        self.features = np.unique(feature).astype(np.intp)
        keys, tables, missing_rows = [], [], []
        for f in self.features.tolist():
            mine = np.flatnonzero(feature == f)
            mine = mine[np.argsort(threshold[mine], kind="stable")]
            table = np.full((mine.size + 1, len(trees)), everything, self.mask_type)  # row j: the first j nodes fail
            table[np.arange(1, mine.size + 1), tree[mine]] = mask[mine]
            np.bitwise_and.accumulate(table, axis=0, out=table)
            missing = np.full(len(trees), everything, self.mask_type)
            right = mine[~missing_left[mine]]
            np.bitwise_and.at(missing, tree[right], mask[right])
            keys.append(_complex(np.full(mine.size, float(f)), threshold[mine]))
            tables.append(table)
            missing_rows.append(missing)
        # numpy orders complex numbers by real part, then imaginary part: one searchsorted of (feature, value) over
        # these (feature, threshold) keys gives, per feature, the keys of the features before it plus its thresholds
        # below the value, which with one more row per feature before it is the row of its table to read
        self.keys = np.concatenate([np.zeros(0, complex), *keys])
        self.table = np.concatenate([*tables, np.array(missing_rows, self.mask_type).reshape(-1, len(trees))])
        self.missing_row = self.table.shape[0] - self.features.size + np.arange(self.features.size)
        self.leaf_start = np.arange(len(trees)) * bits

    @classmethod
    def of(cls, *models: Any) -> FlatForests | None:
        """The models' trees, or None when one is not a fitted single-output histogram gradient boosting model
        without categorical features whose trees have at most :data:`MASK_BITS` leaves (module doc)."""
        widths = set()
        for model in models:
            if not isinstance(model, HistGradientBoostingRegressor | HistGradientBoostingClassifier):
                return None
            if (getattr(model, "n_trees_per_iteration_", None) != 1 or getattr(model, "is_categorical_", 1) is not None
                    or getattr(model, "_preprocessor", 1) is not None):
                return None
            if any(int(p.nodes["is_leaf"].sum()) > MASK_BITS for (p,) in model._predictors):
                return None
            widths.add(model.n_features_in_)
        return cls(models) if len(widths) == 1 else None

    def raw_predict(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each model's raw prediction (baseline plus its trees' leaf values, added tree by tree), shape (n,)."""
        rows = np.asarray(rows, np.float64)
        n = rows.shape[0]
        values = rows[:, self.features]
        query = _complex(np.broadcast_to(self.features.astype(np.float64), values.shape), values)  # (feature, value)
        index = np.searchsorted(self.keys, query, side="left") + np.arange(self.features.size)
        missing = np.isnan(values)
        if missing.any():
            index = np.where(missing, self.missing_row, index)
        left = np.bitwise_and.reduce(self.table[index], axis=1)  # (rows, trees): the leaves no failing node rules out
        lowest = left & (~left + self.mask_type(1))
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # the leftmost leaf left
        leaves = self.leaf_values.ravel()[self.leaf_start + leaf].T  # (trees, rows)
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


def _leaf_spans(nodes: np.ndarray) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """A tree's leaves left to right (node indices), and for each node the [first, end) numbers of its leaves."""
    leaves: list[int] = []
    spans: dict[int, tuple[int, int]] = {}

    def visit(i: int) -> None:
        first = len(leaves)
        if nodes["is_leaf"][i]:
            leaves.append(i)
        else:
            visit(int(nodes["left"][i]))
            visit(int(nodes["right"][i]))
        spans[i] = (first, len(leaves))

    visit(0)
    return leaves, spans


def _complex(real: np.ndarray, imag: np.ndarray) -> np.ndarray:
    """Complex numbers with exactly these parts (``real + 1j * imag`` would turn an infinite ``imag`` into NaN)."""
    out = np.empty(np.shape(real), complex)
    out.real, out.imag = real, imag
    return out
