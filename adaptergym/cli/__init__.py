"""The ``adaptergym`` command line: one small class per subcommand, loaded only when it is used."""

from adaptergym.cli.main import main

__all__ = ["main"]
