"""Entry point: parse the subcommand, run it, turn adaptergym errors into one-line messages."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from adaptergym.errors import AdapterGymError

#: subcommand -> "module:Class" (imported only when that subcommand runs, so heavy dependencies load late).
COMMANDS = {
    "simulate": "adaptergym.cli.simulate:Simulate",
    "bench": "adaptergym.cli.bench:Bench",
    "calibrate": "adaptergym.cli.calibrate:Calibrate",
    "validate": "adaptergym.cli.validate:Validate",
    "serve": "adaptergym.cli.serve:Serve",
    "collect": "adaptergym.cli.collect:Collect",
    "sweep": "adaptergym.cli.sweep:Sweep",
    "surrogate": "adaptergym.cli.surrogate:SurrogateCommand",
    "place": "adaptergym.cli.place:Place",
    "leaderboard": "adaptergym.cli.leaderboard:Leaderboard",
    "replay": "adaptergym.cli.replay:Replay",
    "forecast": "adaptergym.cli.forecast:Forecast",
    "advise": "adaptergym.cli.advise:Advise",
}


def _load(name: str):
    module, cls = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only subcommand ``only`` (each subcommand's module is imported to build its
    arguments, and some import heavy libraries for their help texts: a run loads only its own)."""
    from adaptergym.cli.base import add_common

    parser = argparse.ArgumentParser(prog="adaptergym", description="Digital twin of vLLM multi-LoRA serving.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only in COMMANDS else COMMANDS:
        command = _load(name)
        doc = (type(command).__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else "", description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(p)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``adaptergym`` with ``argv``; returns the exit code (0 ok, 1 error, 2 usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return int(args._command.take_action(args) or 0)
    except AdapterGymError as exc:
        if args.debug:
            raise
        print(f"adaptergym {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"adaptergym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
