"""Gymnasium environments, registered on import with lazy string entry points (no env module loads until made).

| id | decision | episode |
|----|----------|---------|
| ``adaptergym/AdapterCaching-v0`` | one GPU: how many offered adapters to serve, ``max_loras`` | one step |
| ``adaptergym/AdapterPlacement-v0`` | a GPU pool: each adapter's GPU, each GPU's ``max_loras`` | a step per adapter |
| ``adaptergym/AdapterFleet-v0`` | a fleet under changing traffic: a packer's knobs | a step per epoch |
| ``adaptergym/AdapterPlacement-v1`` | a GPU pool: each GPU's fill and slot share (built-in packer) | a step per GPU |

``gymnasium.make("adaptergym/AdapterPlacement-v0", objective="latency", scorer="twin")``; each class docstring
is the full specification.
"""

from gymnasium.envs.registration import register, registry

ENV_IDS = ("adaptergym/AdapterCaching-v0", "adaptergym/AdapterPlacement-v0", "adaptergym/AdapterFleet-v0",
           "adaptergym/AdapterPlacement-v1")
#: The placement environments (same task and outcome ``info``; v1 has the coarser, packer-driven action).
PLACEMENT_IDS = (ENV_IDS[1], ENV_IDS[3])

if ENV_IDS[0] not in registry:
    register(id=ENV_IDS[0], entry_point="adaptergym.envs.caching:AdapterCachingEnv")
    register(id=ENV_IDS[1], entry_point="adaptergym.envs.placement:AdapterPlacementEnv")
    register(id=ENV_IDS[2], entry_point="adaptergym.envs.fleet:AdapterFleetEnv")
    register(id=ENV_IDS[3], entry_point="adaptergym.envs.packing:PackingPlacementEnv")

__all__ = ["ENV_IDS", "PLACEMENT_IDS"]
