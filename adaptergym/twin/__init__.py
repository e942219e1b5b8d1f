"""The Digital Twin of one vLLM V1 replica and of a fleet of them (no gymnasium, no policies here)."""

from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.fleet import ReplicaPlan, route_even, simulate_fleet
from adaptergym.twin.record import RunRecord
from adaptergym.twin.replica import check_lengths, check_ranks, run_replica
from adaptergym.twin.startup import Startup, check_startup, lora_memory_gib

__all__ = [
    "ReplicaEngine",
    "ReplicaPlan",
    "RunRecord",
    "ServerConfig",
    "Startup",
    "check_lengths",
    "check_ranks",
    "check_startup",
    "lora_memory_gib",
    "route_even",
    "run_replica",
    "simulate_fleet",
]
