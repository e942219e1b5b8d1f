"""Surrogates of shipped profiles: trained on first use from a small twin dataset shipped with the package.

No model is pickled into the repository: each shipped profile has a twin sweep in
``adaptergym/data/surrogate/<profile>.csv.gz`` (its rows record the profile's fingerprint), and
:func:`load_surrogate` trains on it once per process (deterministically, about a second) and keeps the model
in memory. When the profile has changed since its dataset was generated, it warns with the command that
regenerates the dataset, and still loads.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from adaptergym.profile import TwinProfile, load_profile, shipped_profiles
from adaptergym.surrogate.model import Surrogate
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.sweep.runner import read_rows

log = logging.getLogger(__name__)

#: The sweep every shipped dataset is: its seed, points and window (``adaptergym sweep --ship`` runs it).
SHIPPED_SEED = 0
SHIPPED_POINTS = 2500
SHIPPED_WINDOW_S = 300.0

_CACHE: dict[tuple[str, str], Surrogate] = {}
_DIGESTS: dict[Path, tuple[tuple[int, int], str]] = {}  # path -> ((mtime_ns, size), sha256 of its bytes)


def shipped_dir() -> Path:
    """The package folder holding the shipped datasets."""
    return Path(__file__).resolve().parents[1] / "data" / "surrogate"


def shipped_dataset(profile_name: str) -> Path:
    """Where the shipped dataset of ``profile_name`` lives (whether or not it exists)."""
    return shipped_dir() / f"{profile_name}.csv.gz"


def regenerate_command(profile_name: str) -> str:
    """The one command that regenerates the shipped dataset of a profile."""
    return f"adaptergym sweep --profile {profile_name} --ship"


def clear_cache() -> None:
    """Forget the models trained so far (the next :func:`load_surrogate` trains again)."""
    _CACHE.clear()
    _DIGESTS.clear()


def _digest(path: Path) -> str:
    """SHA-256 of the file, hashed again only when its modification time or size changes (environments ask at
    every reset)."""
    stat = path.stat()
    signature = (stat.st_mtime_ns, stat.st_size)
    if _DIGESTS.get(path, (None,))[0] != signature:
        _DIGESTS[path] = (signature, hashlib.sha256(path.read_bytes()).hexdigest())
    return _DIGESTS[path][1]


def load_surrogate(profile_name: str | TwinProfile) -> Surrogate | None:
    """The trained surrogate of a shipped profile, or None when no dataset ships for it.

    Args:
        profile_name: a shipped profile's name (or the profile itself; its ``name`` picks the dataset).
    """
    if isinstance(profile_name, TwinProfile):
        profile, name = profile_name, profile_name.name
    else:
        name = str(profile_name)
        if name not in shipped_profiles():
            return None
        profile = None
    path = shipped_dataset(name)
    if not path.is_file():
        return None
    digest = _digest(path)
    if (name, digest) not in _CACHE:
        profile = profile or load_profile(name)
        data = read_rows(path)
        found = set(data["profile_fingerprint"])
        if found != {profile_fingerprint(profile)}:
            log.warning("surrogate: %s was generated with another version of profile %s; regenerate it with `%s`",
                        path.name, name, regenerate_command(name))
        _CACHE[(name, digest)] = Surrogate.fit(data, profile)
    return _CACHE[(name, digest)]
