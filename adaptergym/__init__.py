"""adaptergym: a calibrated digital twin of vLLM multi-LoRA serving, with Gymnasium environments."""

import adaptergym.envs  # noqa: F401  (registers the Gymnasium environments, with lazy entry points)
from adaptergym.metrics import Metrics
from adaptergym.profile import DEFAULT_PROFILE, TwinProfile, load_profile, shipped_profiles
from adaptergym.simulation import FleetMetrics, draw_requests, simulate, simulate_placement
from adaptergym.twin import ReplicaPlan, ServerConfig
from adaptergym.workload import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROFILE",
    "AdapterSpec",
    "ArrivalSpec",
    "FleetMetrics",
    "LengthSpec",
    "Metrics",
    "ReplicaPlan",
    "ServerConfig",
    "TwinProfile",
    "WorkloadSpec",
    "draw_requests",
    "load_profile",
    "shipped_profiles",
    "simulate",
    "simulate_placement",
]
