"""Zero-weight PEFT LoRA adapters of a given rank: they cost vLLM compute and memory like real ones.

Each adapter is a directory with ``adapter_config.json`` (PEFT's LoRA config: rank ``r``, ``lora_alpha``,
target modules q/k/v/o) and ``adapter_model.safetensors`` holding ``lora_A`` (rank x in) and ``lora_B``
(out x rank) zero tensors per layer and target module, named as PEFT saves them
(``base_model.model.model.layers.<i>.self_attn.<module>.lora_A.weight``). Shapes come from the base model's
``config.json``: ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` (default
hidden / heads) and ``num_hidden_layers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adaptergym.errors import ConfigError, DependencyNotInstalled

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def projection_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each attention projection, from a Hugging Face model config."""
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model config.json: missing or bad field {exc}; need hidden_size and "
                          "num_attention_heads (num_key_value_heads, head_dim optional)") from None
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv_heads * head_dim),
            "v_proj": (hidden, kv_heads * head_dim), "o_proj": (heads * head_dim, hidden)}


def load_model_config(model: str) -> dict[str, Any]:
    """``config.json`` of a local model directory, or of a Hugging Face Hub model (needs huggingface_hub)."""
    local = Path(model) / "config.json"
    if local.is_file():
        path = local
    else:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise DependencyNotInstalled(f"model {model!r} is not a local directory with config.json, and "
                                         "reading it from the Hub needs huggingface_hub: pip install "
                                         "'adaptergym[vllm]'") from None
        try:
            path = Path(hf_hub_download(model, "config.json"))
        except Exception as exc:  # network, auth, unknown repo: all end the launch the same way
            raise ConfigError(f"model {model!r}: cannot fetch config.json from the Hub ({type(exc).__name__}); "
                              "pass a local model directory") from None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable model config ({exc})") from None


def write_zero_adapter(directory: str | Path, base_model: str, model_config: dict[str, Any], rank: int) -> Path:
    """Write one zero-weight LoRA adapter of ``rank`` into ``directory``; returns the directory."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise DependencyNotInstalled("writing LoRA adapters needs safetensors: pip install safetensors "
                                     "(it comes with vLLM)") from None
    if rank < 1:
        raise ConfigError(f"adapter rank {rank} must be >= 1")
    try:
        layers = int(model_config["num_hidden_layers"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("model config.json: missing or bad field 'num_hidden_layers'") from None
    shapes = projection_shapes(model_config)
    tensors = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.zeros((rank, fan_in), np.float16)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros((fan_out, rank), np.float16)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "r": rank,
              "lora_alpha": rank, "lora_dropout": 0.0, "target_modules": list(TARGET_MODULES), "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None, "use_rslora": False,
              "use_dora": False}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def write_adapters(root: str | Path, base_model: str, model_config: dict[str, Any],
                   adapters: dict[str, int]) -> dict[str, Path]:
    """One zero adapter per name (``name -> rank``), sharing files between adapters of the same rank.

    vLLM loads each ``--lora-modules`` entry separately, so adapters of one rank can point at one directory.
    """
    by_rank = {rank: write_zero_adapter(Path(root) / f"zero-lora-r{rank}", base_model, model_config, rank)
               for rank in sorted(set(adapters.values()))}
    return {name: by_rank[rank] for name, rank in adapters.items()}
