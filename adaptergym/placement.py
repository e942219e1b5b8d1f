"""Placements (adapters -> GPUs, with each GPU's ``max_loras``), the policy interface, and their verification.

Every placement policy (``baselines/``, trained agents in ``agents/``) returns a :class:`Placement`; one
function, :func:`verify`, judges them all the same way::

    from adaptergym.placement import verify
    from baselines import get_policy

    placement = get_policy("greedy").place(workload, profile, seed=0)
    verdict = verify(workload, placement, profile, seed=0)       # verdict.starved_gpus == 0 is the goal

**What verification runs.** An adapter may sit on several GPUs (replication); its traffic is then split
evenly, so each GPU serves ``rate / copies`` of it. GPU ``k`` is judged alone on its share
(:func:`gpu_workload`): exactly the run ``adaptergym simulate --workload gpu_k.json --max-loras M
--max-cpu-loras C --duration D --seed S`` makes (:meth:`GpuVerdict.simulate_command` spells it), with the
papers' starvation rule over the whole run (served tokens/s 10% or more short of offered); ``D`` is the
verification window, stretched for a GPU too lightly loaded to see :data:`MIN_VERIFIED_REQUESTS` requests in
it. This is the
fleet twin run under even routing in distribution: ``simulate_placement(..., router="even")`` deals each
replicated adapter's requests round-robin, which gives every copy a share of ``rate / copies`` too, and
replicas never interact; the per-GPU runs differ from it only in which random requests each GPU draws
(``tests/test_placement.py`` checks both agree). Judging each GPU on its own draw is what makes a verdict
reproducible with one ``simulate`` command, and lets policies re-check only the GPUs they changed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from adaptergym.errors import ConfigError, WorkloadError
from adaptergym.metrics import Metrics, summarize
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.server_capacity import rank_cover
from adaptergym.simulation import draw_requests
from adaptergym.twin import ServerConfig, run_replica
from adaptergym.twin.fleet_plan import check_adapters
from adaptergym.workload import AdapterSpec, WorkloadSpec

#: Simulated seconds a placement is verified over unless asked otherwise (the papers' runs last an hour;
#: ten minutes keeps a 300-adapter verification well under a second and still spans thousands of requests).
VERIFY_DURATION_S = 600.0
#: A GPU too lightly loaded to see this many requests in the verification window is simulated for longer, until
#: it expects to: with a few dozen requests, one long request still running at the end is 10% of the tokens
#: and the 90% rule would call an idle GPU starved.
MIN_VERIFIED_REQUESTS = 500


@dataclass(frozen=True, slots=True)
class GpuAssignment:
    """One GPU of a placement: the adapters it serves and its vLLM ``--max-loras``.

    Attributes:
        gpu: the GPU's index in the placement (0, 1, ...).
        adapters: ids of the adapters it serves (each once).
        max_loras: GPU adapter slots (``--max-loras``), at least 1.
        max_cpu_loras: CPU adapter cache (``--max-cpu-loras``); None: room for all its adapters, as in the
            papers' runs (at least ``max_loras``).
    """

    gpu: int
    adapters: tuple[str, ...]
    max_loras: int
    max_cpu_loras: int | None = None

    def config(self, ranks: Sequence[int]) -> ServerConfig:
        """The server flags of this GPU; ``ranks`` are its adapters' ranks (``--max-lora-rank`` is the
        smallest value vLLM accepts that covers them)."""
        cpu = self.max_cpu_loras if self.max_cpu_loras is not None else max(self.max_loras, len(self.adapters))
        return ServerConfig(max_loras=self.max_loras, max_cpu_loras=cpu,
                            max_lora_rank=rank_cover(max(ranks, default=1)))


@dataclass(frozen=True, slots=True)
class Placement:
    """Adapters on GPUs. An adapter may be on several GPUs (replication); its traffic is then split evenly."""

    assignments: tuple[GpuAssignment, ...]

    @property
    def gpus(self) -> int:
        return len(self.assignments)

    def copies(self) -> Counter[str]:
        """How many GPUs serve each adapter."""
        return Counter(a for g in self.assignments for a in g.adapters)

    def check(self, workload: WorkloadSpec) -> None:
        """Reject a placement that does not serve ``workload`` exactly: every adapter placed, no unknown id,
        no adapter twice on one GPU, no empty GPU, ``max_loras`` >= 1, GPUs numbered 0..n-1.

        Raises:
            ConfigError: naming the GPU and field at fault.
        """
        known = {a.id for a in workload.adapters}
        for k, gpu in enumerate(self.assignments):
            if gpu.gpu != k:
                raise ConfigError(f"placement[{k}].gpu: {gpu.gpu} should be {k} (number GPUs 0..n-1 in order)")
            if not gpu.adapters:
                raise ConfigError(f"placement[{k}].adapters: empty; drop GPUs that serve nothing")
            if gpu.max_loras < 1:
                raise ConfigError(f"placement[{k}].max_loras: {gpu.max_loras} must be >= 1")
            check_adapters(f"placement[{k}]", gpu.adapters, known)
        missing = known - set(self.copies())
        if missing:
            raise ConfigError(f"placement: adapter(s) {sorted(missing)[:5]} are on no GPU; place every adapter")

    def to_dicts(self) -> list[dict[str, Any]]:
        """The JSON form of ``adaptergym place``: ``[{"gpu", "adapters", "max_loras"}, ...]``."""
        return [{"gpu": g.gpu, "adapters": list(g.adapters), "max_loras": g.max_loras} for g in self.assignments]

    @classmethod
    def from_groups(cls, groups: Sequence[Sequence[str]], max_loras: Sequence[int]) -> Placement:
        """A placement from per-GPU adapter id lists and slot counts (GPUs numbered in order)."""
        return cls(tuple(GpuAssignment(k, tuple(ids), int(m))
                         for k, (ids, m) in enumerate(zip(groups, max_loras, strict=True))))


@runtime_checkable
class PlacementPolicy(Protocol):
    """Anything that places a workload's adapters on GPUs: heuristics, searches, trained agents.

    ``place`` must be deterministic for a given ``seed`` and place every adapter of ``workload``.
    """

    name: str

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement: ...


def gpu_workload(workload: WorkloadSpec, assignment: GpuAssignment, copies: Counter[str]) -> WorkloadSpec:
    """The workload one GPU serves: its adapters, each at ``rate / copies`` (the even split of replicas)."""
    by_id = {a.id: a for a in workload.adapters}
    adapters = tuple(AdapterSpec(i, by_id[i].rank, by_id[i].rate / copies[i]) for i in assignment.adapters)
    return workload.with_adapters(adapters).with_name(f"{workload.name or 'workload'}/gpu{assignment.gpu}")


@dataclass(frozen=True, slots=True)
class GpuVerdict:
    """One GPU simulated alone on its share of the traffic."""

    assignment: GpuAssignment
    config: ServerConfig
    metrics: Metrics
    ttft_ms: np.ndarray = field(repr=False)  # TTFT of every request it finished, ms
    duration_s: float
    seed: int

    @property
    def starved(self) -> bool:
        return self.metrics.starved

    def simulate_command(self, workload_path: str = "gpu.json") -> str:
        """The CLI run that reproduces this verdict, given this GPU's :func:`gpu_workload` saved as JSON."""
        c = self.config
        return (f"adaptergym simulate --workload {workload_path} --max-loras {c.max_loras} --max-cpu-loras "
                f"{c.max_cpu_loras} --max-lora-rank {c.max_lora_rank} --duration {self.duration_s:.12g} "
                f"--seed {self.seed} --json")


@dataclass(frozen=True, slots=True)
class Verification:
    """A placement's verdict: per-GPU runs and the fleet's figures."""

    gpus: tuple[GpuVerdict, ...]

    @property
    def starved_gpus(self) -> int:
        return sum(g.starved for g in self.gpus)

    @property
    def total_throughput(self) -> float:
        """Tokens/s (prompt + output) of requests finished, summed over GPUs."""
        return float(sum(g.metrics.total_throughput for g in self.gpus))

    @property
    def p99_ttft_ms(self) -> float:
        """99th percentile TTFT over every request the fleet finished (nan if none)."""
        ttft = np.concatenate([g.ttft_ms for g in self.gpus]) if self.gpus else np.zeros(0)
        return float(np.percentile(ttft, 99)) if ttft.size else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"starved_gpus": self.starved_gpus, "total_throughput": self.total_throughput,
                "p99_ttft_ms": self.p99_ttft_ms}


def verification_window_s(total_rate: float, duration_s: float = VERIFY_DURATION_S) -> float:
    """Simulated seconds a GPU offered ``total_rate`` req/s is judged over: ``duration_s``, or long enough to
    expect :data:`MIN_VERIFIED_REQUESTS` requests."""
    return max(duration_s, MIN_VERIFIED_REQUESTS / max(total_rate, 1e-9))


def verify_gpu(workload: WorkloadSpec, assignment: GpuAssignment, copies: Counter[str], profile: TwinProfile,
               *, seed: int = 0, duration_s: float = VERIFY_DURATION_S) -> GpuVerdict:
    """Simulate one GPU alone on its share of ``workload`` (what ``adaptergym simulate`` runs for it) for
    ``duration_s``, or longer when its share is too light for :data:`MIN_VERIFIED_REQUESTS` requests."""
    share = gpu_workload(workload, assignment, copies)
    config = assignment.config([a.rank for a in share.adapters]).resolved(profile)
    duration_s = verification_window_s(share.total_rate, duration_s)
    record = run_replica(profile, config, draw_requests(share, seed, duration_s))
    done = np.isfinite(record.finish_s) & (record.finish_s <= record.duration_s + 1e-9)
    ttft = (record.first_token_s[done] - record.arrival_s[done]) * 1000.0
    return GpuVerdict(assignment, config, summarize(record), ttft, duration_s, seed)


def verify(workload: WorkloadSpec, placement: Placement, profile: TwinProfile | str | None = None, *,
           seed: int = 0, duration_s: float = VERIFY_DURATION_S) -> Verification:
    """Judge a placement: every GPU simulated alone on its even share of the traffic (see the module doc).

    Args:
        workload: the workload placed (adapters with rates; a trace cannot be split by rate).
        placement: the placement to judge; checked first with :meth:`Placement.check`.
        profile: twin profile (object, name or path; default the shipped default).
        seed: seed of every GPU's request draw.
        duration_s: simulated seconds per GPU.

    Raises:
        WorkloadError: the workload has no per-adapter rates (a trace CSV).
        ConfigError: the placement does not serve the workload exactly.
    """
    if workload.lengths.kind == "trace" or not workload.adapters:
        raise WorkloadError("workload: placement needs adapters with rates (a workload JSON), not a trace CSV")
    if not duration_s > 0:
        raise ConfigError(f"duration_s: {duration_s} must be > 0 simulated seconds")
    prof = load_profile(profile)
    placement.check(workload)
    copies = placement.copies()
    return Verification(tuple(verify_gpu(workload, g, copies, prof, seed=seed, duration_s=duration_s)
                              for g in placement.assignments))
