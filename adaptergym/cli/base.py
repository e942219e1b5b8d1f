"""Shared pieces of every subcommand: the base class, common flags and output formatting."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


class Command:
    """A subcommand. The class docstring is its help text."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's flags."""

    def take_action(self, args: argparse.Namespace) -> int:
        """Run; return the exit code."""
        raise NotImplementedError


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


#: The vLLM server flags ``simulate`` and ``serve`` take besides ``--max-loras``: (flag, type, help).
SERVER_FLAGS = (
    ("--max-cpu-loras", int, "CPU adapter cache size"),
    ("--max-lora-rank", int, "vLLM --max-lora-rank"),
    ("--max-num-seqs", int, "vLLM --max-num-seqs"),
    ("--max-num-batched-tokens", int, "token budget per step"),
    ("--gpu-memory-utilization", float, "share of GPU memory vLLM may take; the KV cache gets what weights, LoRA "
                                        "slots and activations leave of it (default: profile's, 0.9)"),
    ("--max-model-len", int, "longest request (prompt + output) accepted; the KV cache must hold one (default: "
                             "the model's context, profile's)"),
)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-loras`` and the flags of :data:`SERVER_FLAGS`, as vLLM spells them (default: the profile's)."""
    parser.add_argument("--max-loras", type=int, default=None, help="GPU adapter slots")
    for flag, kind, text in SERVER_FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=text)


def server_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerConfig`` fields of :data:`SERVER_FLAGS` as parsed (None: unset)."""
    return {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in SERVER_FLAGS}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(obj: Any) -> None:
    """One JSON object on stdout (NaN/inf become null so any JSON parser reads it)."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2) + "\n")


def format_value(value: Any, large: str = ",.1f", small: str = ".3g") -> str:
    """A table cell: floats of 100 or more in the ``large`` format spec, smaller ones in ``small``, non-finite
    ones as ``-``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:{large}}" if abs(value) >= 100 else f"{value:{small}}"
    return str(value)


def print_table(title: str, rows: list[tuple[str, Any]] | list[dict[str, Any]], columns: list[str] | None = None):
    """A human table on stdout: key/value pairs, or a list of dict rows."""
    from rich.console import Console  # imported here: a --json run has no table to draw
    from rich.table import Table

    console = Console()
    table = Table(title=title)
    if rows and isinstance(rows[0], dict):
        columns = columns or list(rows[0])
        for col in columns:
            table.add_column(col, justify="right" if col != columns[0] else "left")
        for row in rows:
            table.add_row(*(format_value(row.get(c)) for c in columns))
    else:
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in rows:
            table.add_row(key, format_value(value))
    console.print(table)
