"""Error hierarchy: every message names the file, field or value at fault and how to fix it."""


class AdapterGymError(Exception):
    """Base class for every error adaptergym raises on purpose (the CLI prints these as one line)."""


class ProfileError(AdapterGymError):
    """A twin profile is missing, unknown, or has an invalid field."""


class WorkloadError(AdapterGymError):
    """A workload file or generator argument is invalid."""


class ConfigError(AdapterGymError):
    """A server configuration (max_loras, ranks, ...) is invalid for the profile."""


class UnknownName(AdapterGymError):
    """A name (policy, scenario, profile) is not registered."""


class UnknownScenario(UnknownName):
    """A scenario name is not in the scenario suite."""


class InvalidAction(AdapterGymError):
    """An environment received an action outside its action space."""


class DataError(AdapterGymError):
    """A data file (real-runs CSV, trace) is malformed."""


class DependencyNotInstalled(AdapterGymError):
    """An optional dependency is needed; the message names the extra to install."""
