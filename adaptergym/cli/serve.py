"""``adaptergym serve``: an OpenAI-compatible server with the twin's timing (vLLM's API, placeholder tokens)."""

from __future__ import annotations

import argparse

from adaptergym.cli.base import Command, add_server_flags, server_flags


class Serve(Command):
    """Serve vLLM's OpenAI-compatible API from the twin, in real time or scaled time (--speed).

    Adapters come from a workload (--workload: ids and ranks) and/or vLLM-style --lora-modules name=path
    (rank from path/adapter_config.json); more can be loaded at run time with POST /v1/load_lora_adapter.
    Server flags default as in `adaptergym simulate` (one GPU slot per adapter, the smallest --max-lora-rank
    covering the adapters). A configuration vLLM would refuse to start exits 1 with the reason.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path")
        parser.add_argument("--workload", default=None, help="serve the adapters of this workload JSON / trace")
        parser.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                            help="adapters as vLLM takes them: name=path or JSON {name, path}")
        parser.add_argument("--enable-lora", action="store_true", help="LoRA on even without start-up adapters")
        add_server_flags(parser)
        parser.add_argument("--max-waiting-queue-length", type=int, default=None,
                            help="waiting requests beyond which new ones get HTTP 503 (default: profile's cap)")
        parser.add_argument("--served-model-name", default=None, help="base model name (default: profile's)")
        parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=8000, help="port to listen on")

    def take_action(self, args: argparse.Namespace) -> int:
        import math

        from adaptergym import ServerConfig, WorkloadSpec, load_profile
        from adaptergym.errors import ConfigError
        from adaptergym.serving import AdapterSource, build_server, run
        from adaptergym.serving.models import parse_lora_module, rank_of
        from adaptergym.twin.config import default_rank
        from adaptergym.workload import load_trace

        if not math.isfinite(args.speed) or args.speed <= 0:
            raise ConfigError(f"--speed: {args.speed} must be a number > 0 (simulated seconds per wall second)")
        adapters: list[AdapterSource] = []
        if args.workload:
            spec = WorkloadSpec.from_json(args.workload)
            if spec.lengths.kind == "trace":
                batch = load_trace(spec.lengths.path, spec)
                adapters += [AdapterSource(i, int(r)) for i, r in zip(batch.adapter_ids, batch.adapter_ranks,
                                                                      strict=True)]
            else:
                adapters += [AdapterSource(a.id, a.rank) for a in spec.adapters]
        for text in args.lora_modules:
            name, path = parse_lora_module(text)
            try:
                adapters.append(AdapterSource(name, rank_of(path), path))
            except ValueError as exc:
                raise ConfigError(f"--lora-modules {name}: {exc}") from None
        profile = load_profile(args.profile)
        config = default_rank(ServerConfig(
            max_loras=args.max_loras or max(1, len(adapters)),
            **server_flags(args),
            enable_lora=bool(adapters) or args.enable_lora,
        ), [a.rank for a in adapters]).resolved(profile)
        server = build_server(profile, config, adapters, speed=args.speed, served_model_name=args.served_model_name,
                              max_waiting_queue_length=args.max_waiting_queue_length)
        run(server, args.host, args.port)
        return 0
