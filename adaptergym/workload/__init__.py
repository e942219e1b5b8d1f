"""What arrives: workload specs, length and arrival distributions, rate schedules, request sampling, generators."""

from adaptergym.workload.generators import cycled_workload, powerlaw_workload
from adaptergym.workload.rates import RateTable, epoch_edges, rate_table
from adaptergym.workload.requests import RequestBatch, load_trace, sample_requests
from adaptergym.workload.schedule import MMPP, Component, Daily, Drift, Flash, Piecewise
from adaptergym.workload.spec import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec

__all__ = [
    "MMPP",
    "AdapterSpec",
    "ArrivalSpec",
    "Component",
    "Daily",
    "Drift",
    "Flash",
    "LengthSpec",
    "Piecewise",
    "RateTable",
    "RequestBatch",
    "WorkloadSpec",
    "cycled_workload",
    "epoch_edges",
    "load_trace",
    "powerlaw_workload",
    "rate_table",
    "sample_requests",
]
