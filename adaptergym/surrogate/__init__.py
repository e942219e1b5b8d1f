"""The published pipeline's model: tree surrogates of the twin, per GPU, trained on a twin sweep.

    from adaptergym.surrogate import gpu_features, load_surrogate
    model = load_surrogate("h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5")   # None if none ships
    row = gpu_features(rates, ranks, max_loras, lengths)                       # one GPU
    model.predict(row[None])          # {"throughput": tok/s served, "starved_prob": [0, 1], ...}
    model.best_max_loras(rates, ranks, lengths)

:mod:`.features` builds the rows, :mod:`.model` holds the models, :mod:`.shipped` trains them from the shipped
datasets, :mod:`.evaluation` measures them against held-out twin runs and real vLLM runs.
"""

from adaptergym.surrogate.features import FEATURES, gpu_features
from adaptergym.surrogate.model import MODELS, Surrogate, dataset_features
from adaptergym.surrogate.shipped import load_surrogate, regenerate_command, shipped_dataset

__all__ = [
    "FEATURES",
    "MODELS",
    "Surrogate",
    "dataset_features",
    "gpu_features",
    "load_surrogate",
    "regenerate_command",
    "shipped_dataset",
]
