"""Both engines reproduce the records of the fingerprinted runs (``tests/engine_cases.py``): exactly, but for
the sums the reference engine folds in blocks (see there)."""

from __future__ import annotations

import json

import pytest

from adaptergym.twin.compiled_engine import CompiledEngine
from adaptergym.twin.engine import ReferenceEngine
from tests.engine_cases import FINGERPRINTS, SUMS_RTOL, cases, run_case

EXPECTED = json.loads(FINGERPRINTS.read_text())


def test_every_case_is_fingerprinted():
    assert sorted(EXPECTED) == sorted(cases())


@pytest.mark.parametrize("engine", [CompiledEngine, ReferenceEngine], ids=["compiled", "reference"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_records_match_the_fingerprints(name, engine):
    got = run_case(name, engine)
    assert len(got) == len(EXPECTED[name])
    for mine, expected in zip(got, EXPECTED[name], strict=True):
        assert mine["exact"] == expected["exact"]
        assert mine["hash"] == expected["hash"]
        assert mine["sums"] == pytest.approx(expected["sums"], rel=SUMS_RTOL, abs=1e-9)
