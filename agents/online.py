"""A trained AdapterFleet-v0 agent as an online policy of ``baselines.online``: it drives any
:class:`adaptergym.dynamic.DynamicFleet` (the twin-scored ones of ``adaptergym leaderboard --suite dynamic``, or
yours through :func:`baselines.online.replay.replay`) through the environment's own observations, masks and
packer, so it sees exactly what it trained on.

    policy = AgentPolicy("agents/checkpoints/fleet-maskable-ppo")
    replay(policy, DynamicFleet(workload, seed=0, epoch_s=300.0))     # baselines.online.replay
"""

from __future__ import annotations

from pathlib import Path

from adaptergym.dynamic import DynamicFleet, FleetPlan
from adaptergym.envs.fleet_control import FleetControl
from adaptergym.errors import ConfigError
from agents.config import FLEET
from agents.envs import make_env
from agents.run import agent_label, load_agent


class AgentPolicy:
    """An online policy (``name``, ``reset(fleet)``, ``plan(fleet)``) whose knobs a trained agent sets.

    The first epoch runs the fleet every AdapterFleet-v0 episode starts with; from the second on, the agent acts
    deterministically on the observation of the epoch just served, and its knobs become the plan.

    Args:
        checkpoint: a run folder written by ``python -m agents.train`` on AdapterFleet-v0, or its model .zip.

    Raises:
        ConfigError: a checkpoint trained on another environment.
    """

    def __init__(self, checkpoint: str | Path) -> None:
        self.agent = load_agent(checkpoint)
        if self.agent.config.env != FLEET:
            raise ConfigError(f"checkpoint: {checkpoint} was trained on {self.agent.config.env}, not {FLEET}")
        self.name = agent_label(self.agent.checkpoint)
        # Never reset: it lends its observations, masks and packer (control_for) to the fleets replayed.
        self._env = make_env(FLEET, **{**self.agent.config.env_kwargs, "scorer": "analytic"}).unwrapped
        self._control: FleetControl | None = None

    def reset(self, fleet: DynamicFleet) -> None:
        self._control = self._env.control_for(fleet)  # type: ignore[attr-defined]

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        control = self._control
        assert control is not None and control.fleet is fleet, "reset(fleet) first"
        if fleet.epoch == 0:
            return control.first_plan()
        control.update()
        action, _ = self.agent.predict(control.observation(), deterministic=True, action_masks=control.action_masks())
        return control.decide(action).plan
