"""What both entry points share: an argument parser whose errors are one line, and one-line adaptergym errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from adaptergym.errors import AdapterGymError


class Parser(argparse.ArgumentParser):
    """``argparse`` that reports a bad flag in one line (``prog: error: argument --steps: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def run(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``main``; a bad flag prints one line and returns 2, an :class:`AdapterGymError`
    one line and 1 (``--debug``: the traceback)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's way out (a bad flag, or --help)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return main(args)
    except AdapterGymError as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of an ``--env-kwarg`` flag; VALUE is read as JSON when it parses (``num_gpus=4`` is an int)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. scenario=uniform-small")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
