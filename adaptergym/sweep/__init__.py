"""Twin dataset sweeps: many one-GPU workloads x ``max_loras`` levels, labelled by the Digital Twin.

A sweep is a deterministic sequence of points (:mod:`.points`), each labelled by one short twin run
(:mod:`.label`), run on a local process pool or a Ray cluster into a resumable CSV (:mod:`.runner`)::

    from adaptergym.sweep import SweepSettings, run_sweep
    run_sweep(SweepSettings(load_profile(None), sweep_seed=0), points=2000, out="twin.csv")

The surrogate models of :mod:`adaptergym.surrogate` are trained on such datasets.
"""

from adaptergym.sweep.label import COLUMNS, SweepSettings, label_point, profile_fingerprint
from adaptergym.sweep.points import SweepPoint, WorkloadRecipe, iter_points, recipe_from_row, sweep_points
from adaptergym.sweep.runner import EXECUTORS, SweepResult, read_rows, run_sweep

__all__ = [
    "COLUMNS",
    "EXECUTORS",
    "SweepPoint",
    "SweepResult",
    "SweepSettings",
    "WorkloadRecipe",
    "iter_points",
    "label_point",
    "profile_fingerprint",
    "read_rows",
    "recipe_from_row",
    "run_sweep",
    "sweep_points",
]
