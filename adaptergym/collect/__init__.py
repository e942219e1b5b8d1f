"""``adaptergym collect``: measure any OpenAI-compatible server (vLLM, or the twin server) on a workload.

Writes runs in the columns of ``shared/data/real_runs.csv`` plus per-request rows, the input that
``adaptergym calibrate`` and ``validate`` take.
"""

from adaptergym.collect.session import RunPlan, Target, collect_run, load_sweep

__all__ = ["RunPlan", "Target", "collect_run", "load_sweep"]
