"""The one-way import flow of DESIGN.md: workload -> twin -> metrics -> envs; the twin knows no gym/policies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "adaptergym/workload": ("adaptergym.twin", "adaptergym.metrics", "adaptergym.envs", "gymnasium", "baselines",
                            "agents"),
    "adaptergym/twin": ("adaptergym.metrics", "adaptergym.envs", "adaptergym.simulation", "gymnasium", "baselines",
                        "agents", "torch", "stable_baselines3"),
    "adaptergym/advise": ("baselines", "agents", "adaptergym.cli"),  # the CLI asks baselines for GPU counts
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_layers(package):
    for path in (ROOT / package).rglob("*.py"):
        for name in imports_of(path):
            bad = [f for f in FORBIDDEN[package] if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(ROOT)} imports {name}"


def test_no_per_model_branches_in_python():
    """Profiles are data: no Python file names a model to branch on."""
    for path in (ROOT / "adaptergym").rglob("*.py"):
        text = path.read_text().lower()
        for model in ("llama-3.1", "qwen-2.5", "llama-2-7b", "llama-2-13b"):
            assert f'== "{model}' not in text and f"== '{model}" not in text, f"{path} branches on {model}"
