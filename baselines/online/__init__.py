"""Online placement policies for dynamic serving, by name: ``get_online_policy("periodic", forecast=...)``.

A policy has a ``name``, ``reset(fleet)`` (once, before the episode) and ``plan(fleet) -> FleetPlan`` (before each
epoch), where ``fleet`` is the :class:`adaptergym.dynamic.DynamicFleet` being run: it reads what the fleet lets a
policy see (observed rates, past epoch results, the running plan). :func:`baselines.online.replay.replay` runs
one policy over an episode; the policies themselves are in :mod:`baselines.online.policies`.
"""

from __future__ import annotations

from typing import Any, Protocol

from adaptergym.dynamic import DynamicFleet, FleetPlan
from adaptergym.errors import UnknownName
from adaptergym.registry import Registry
from baselines.online.policies import OraclePolicy, PeriodicPolicy, ReactivePolicy, StaticPolicy


class OnlinePolicy(Protocol):
    """Decides the plan of every epoch (module doc)."""

    name: str

    def reset(self, fleet: DynamicFleet) -> None: ...

    def plan(self, fleet: DynamicFleet) -> FleetPlan: ...


#: name -> factory(**options) -> OnlinePolicy
ONLINE_POLICIES: Registry[OnlinePolicy] = Registry("online policy", UnknownName)
ONLINE_POLICIES.register("static-mean")(lambda **kw: StaticPolicy("mean", **kw))
ONLINE_POLICIES.register("static-peak")(lambda **kw: StaticPolicy("peak", **kw))
ONLINE_POLICIES.register("periodic")(PeriodicPolicy)
ONLINE_POLICIES.register("oracle")(OraclePolicy)
ONLINE_POLICIES.register("reactive")(ReactivePolicy)


def get_online_policy(name: str, **options: Any) -> OnlinePolicy:
    """The online policy registered as ``name``, built with ``options`` (unknown names suggest the closest)."""
    return ONLINE_POLICIES.get(name)(**options)


__all__ = ["ONLINE_POLICIES", "OnlinePolicy", "get_online_policy"]
