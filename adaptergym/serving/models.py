"""What the server serves: the base model and its LoRA adapters (``/v1/models``, load and unload).

An adapter's rank is what the twin needs; it comes from a workload (``--workload``) or from the adapter's
``adapter_config.json`` (field ``r``), which is where vLLM reads it too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from adaptergym.errors import ConfigError
from adaptergym.serving.protocol import APIError, bad_request
from adaptergym.twin.engine import ReplicaEngine


@dataclass(frozen=True, slots=True)
class ServedAdapter:
    name: str
    rank: int
    path: str
    index: int  # the engine's adapter index


def rank_of(path: str) -> int:
    """The LoRA rank in ``<path>/adapter_config.json``; raises ValueError naming what is wrong."""
    config = Path(path) / "adapter_config.json"
    try:
        rank = json.loads(config.read_text()).get("r")
    except OSError:
        raise ValueError(f"No adapter found for {path}") from None
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{config} is not a JSON object") from None
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{config}: field 'r' (the LoRA rank) must be a positive integer, got {rank!r}")
    return rank


def parse_lora_module(text: str) -> tuple[str, str]:
    """``name=path`` or ``{"name": ..., "path": ...}``, as vLLM's ``--lora-modules`` takes them."""
    if "=" in text and "," not in text and not text.lstrip().startswith("{"):
        name, path = text.split("=", 1)
    else:
        try:
            data = json.loads(text)
            name, path = data["name"], data["path"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"--lora-modules {text!r}: expected name=path or a JSON object with name and "
                              "path") from None
    if not name or not path:
        raise ConfigError(f"--lora-modules {text!r}: both a name and a path are needed")
    return name, path


class ServedModels:
    """The base model name and the loaded adapters, mapped to the engine's adapter indices."""

    def __init__(self, base_model: str, engine: ReplicaEngine, max_lora_rank: int, enable_lora: bool) -> None:
        self.base_model = base_model
        self.engine = engine
        self.max_lora_rank = max_lora_rank
        self.enable_lora = enable_lora
        self.adapters: dict[str, ServedAdapter] = {}
        self.created = int(time.time())

    def register(self, name: str, rank: int, path: str = "", index: int | None = None) -> ServedAdapter:
        """Serve an adapter: one the engine was built with (``index``), or a new one added to the engine."""
        if rank > self.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        if index is None:
            index = self.engine.add_adapter(name, rank)
        adapter = ServedAdapter(name, rank, path, index)
        self.adapters[name] = adapter
        return adapter

    def adapter_index(self, model: str) -> int:
        """The engine adapter a request's ``model`` names; vLLM's 404 error if none."""
        if model in self.adapters:
            return self.adapters[model].index
        if model in ("", self.base_model):
            if not self.enable_lora:
                return 0
            raise bad_request(f"model {model or self.base_model!r}: the twin server simulates LoRA requests "
                              "only; name one of the adapters of GET /v1/models", "model")
        raise APIError(HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def load(self, body: Any) -> str:
        """``/v1/load_lora_adapter``: vLLM's checks, replies and errors."""
        name, path = _field(body, "lora_name"), _field(body, "lora_path")
        if not name or not path:
            raise APIError(HTTPStatus.BAD_REQUEST, "Both 'lora_name' and 'lora_path' must be provided.",
                           "InvalidUserInput")
        if not self.enable_lora:
            raise APIError(HTTPStatus.BAD_REQUEST, "LoRA is not enabled. Use --enable-lora to enable LoRA.",
                           "BadRequestError")
        if name in self.adapters and not (isinstance(body, dict) and body.get("load_inplace")):
            raise APIError(HTTPStatus.BAD_REQUEST, f"The lora adapter '{name}' has already been loaded. If you "
                           "want to load the adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
        try:
            self.register(name, rank_of(path), path)
        except ValueError as exc:
            status = HTTPStatus.NOT_FOUND if "No adapter found" in str(exc) else HTTPStatus.BAD_REQUEST
            raise APIError(status, f"Loading lora {name} failed: {exc}",
                           "NotFoundError" if status == HTTPStatus.NOT_FOUND else "BadRequestError") from None
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: Any) -> str:
        """``/v1/unload_lora_adapter``: forget the adapter and drop it from the GPU and CPU caches."""
        name = _field(body, "lora_name")
        if not name:
            raise APIError(HTTPStatus.BAD_REQUEST, "'lora_name' needs to be provided to unload a LoRA adapter.",
                           "InvalidUserInput")
        if name not in self.adapters:
            raise APIError(HTTPStatus.NOT_FOUND, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        self.engine.forget_adapter(self.adapters.pop(name).index)
        return f"Success: LoRA adapter '{name}' removed successfully."

    def listing(self, max_model_len: int) -> dict[str, Any]:
        """``/v1/models``: the base model, then every adapter with the base model as parent."""
        def card(model_id: str, root: str, parent: str | None, length: int | None) -> dict[str, Any]:
            return {"id": model_id, "object": "model", "created": self.created, "owned_by": "vllm", "root": root,
                    "parent": parent, "max_model_len": length, "permission": []}

        cards = [card(self.base_model, self.base_model, None, max_model_len)]
        cards += [card(a.name, a.path or a.name, self.base_model, None) for a in self.adapters.values()]
        return {"object": "list", "data": cards}


def _field(body: Any, name: str) -> str:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    value = body.get(name)
    return value if isinstance(value, str) else ""
