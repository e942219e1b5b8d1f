"""``adaptergym serve``: an OpenAI-compatible server whose timing is the twin's, running in (scaled) real time."""

from adaptergym.serving.app import AdapterSource, TwinServer, build_server, create_app, run

__all__ = ["AdapterSource", "TwinServer", "build_server", "create_app", "run"]
