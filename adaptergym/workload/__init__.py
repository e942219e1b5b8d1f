"""What arrives: workload specs, length and arrival distributions, request sampling, generators."""

from adaptergym.workload.generators import cycled_workload, powerlaw_workload
from adaptergym.workload.requests import RequestBatch, load_trace, sample_requests
from adaptergym.workload.spec import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec

__all__ = [
    "AdapterSpec",
    "ArrivalSpec",
    "LengthSpec",
    "RequestBatch",
    "WorkloadSpec",
    "cycled_workload",
    "load_trace",
    "powerlaw_workload",
    "sample_requests",
]
