"""Reference placement policies, by name: ``get_policy("greedy").place(workload, profile, seed=0)``.

Every policy implements :class:`adaptergym.placement.PlacementPolicy` and is registered here under a plain
string name (``policy_names()`` lists them); ``adaptergym place`` and ``adaptergym leaderboard`` find them
through :data:`POLICIES`. A factory takes keyword options; all accept ``objective`` (``"gpus"``: fewest GPUs
without starvation; ``"latency"``: lowest p99 TTFT on that many GPUs) and reject an objective they cannot
pursue with a one-line :class:`adaptergym.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from adaptergym.errors import UnknownName
from adaptergym.placement import PlacementPolicy
from adaptergym.registry import Registry

#: name -> factory(**options) -> PlacementPolicy
POLICIES: Registry[PlacementPolicy] = Registry("policy", UnknownName)


def get_policy(name: str, **options: Any) -> PlacementPolicy:
    """The policy registered as ``name``, built with ``options`` (unknown names suggest the closest)."""
    return POLICIES.get(name)(**options)


def policy_names() -> list[str]:
    return POLICIES.names()


__all__ = ["POLICIES", "get_policy", "policy_names"]

# Registering modules (imported last: they import POLICIES from here).
from baselines import (  # noqa: E402, F401
    exact,
    greedy,
    heuristics,
    local_search,
    optuna_search,
)
