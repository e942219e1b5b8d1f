"""The Digital Twin of one serving replica (vLLM V1 or S-LoRA) and of a fleet of them (no gymnasium, no policies
here)."""

from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.fleet import ReplicaPlan, route_even, simulate_fleet
from adaptergym.twin.frameworks import FRAMEWORKS, check_startup, framework_of, new_engine
from adaptergym.twin.record import RunRecord
from adaptergym.twin.replica import check_lengths, check_ranks, run_replica
from adaptergym.twin.slora import SLoraEngine
from adaptergym.twin.startup import Startup, lora_memory_gib

__all__ = [
    "FRAMEWORKS",
    "ReplicaEngine",
    "ReplicaPlan",
    "RunRecord",
    "SLoraEngine",
    "ServerConfig",
    "Startup",
    "check_lengths",
    "check_ranks",
    "check_startup",
    "framework_of",
    "lora_memory_gib",
    "new_engine",
    "route_even",
    "run_replica",
    "simulate_fleet",
]
