"""Profiles: shipped ones load and validate; bad ones fail naming the field."""

from __future__ import annotations

import json

import pytest

from adaptergym.errors import ProfileError
from adaptergym.profile import DEFAULT_PROFILE, TwinProfile, load_profile, shipped_profiles


def test_every_shipped_profile_loads_and_round_trips(tmp_path):
    names = shipped_profiles()
    assert DEFAULT_PROFILE in names
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        path = tmp_path / f"{name}.json"
        profile.to_json(path)
        assert TwinProfile.from_json(path) == profile


def test_profile_found_by_model_name():
    assert load_profile("llama-3.1-8b-instruct").name == DEFAULT_PROFILE


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["memory"].update(weights_gib=-1), "weights_gib"),
        (lambda d: d["step_time"]["coefficients"].update(warp_ms=1.0), "warp_ms"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d["loading"].update(cpu_to_gpu_ms={"big": 1.0}), "cpu_to_gpu_ms"),
        (lambda d: d["step_time"].update(tokens_per_hidden_adapter=0), "step_time.tokens_per_hidden_adapter"),
        (lambda d: d["step_time"].update(tokens_per_hidden_adapter="4"), "step_time.tokens_per_hidden_adapter"),
    ],
)
def test_invalid_profile_fields_are_named(tmp_path, mutate, message):
    data = load_profile(DEFAULT_PROFILE).to_dict()
    mutate(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=message):
        TwinProfile.from_json(path)
