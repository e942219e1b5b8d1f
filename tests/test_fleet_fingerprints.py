"""AdapterFleet-v0 (fast and twin-scored) and an online baseline reproduce the episodes fingerprinted before fast mode
was sped up (``tests/fleet_cases.py``): the same seeds and actions give bit-identical observations, rewards, info
and per-adapter figures."""

from __future__ import annotations

import json

import pytest

from tests.fleet_cases import FLEET_FINGERPRINTS, cases

EXPECTED = json.loads(FLEET_FINGERPRINTS.read_text())
pytestmark = pytest.mark.filterwarnings("ignore:.*maximum value is infinity", "ignore:.*minimum value is -infinity")


def test_every_case_is_fingerprinted():
    assert sorted(EXPECTED) == sorted(cases())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_episodes_match_the_fingerprints(name):
    got = cases()[name]()
    expected = EXPECTED[name]
    assert got.get("rewards") == expected.get("rewards")  # exact floats, first mismatch shown
    assert got["episodes"] == expected["episodes"]
    assert got["hash"] == expected["hash"]
