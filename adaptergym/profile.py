"""Twin profiles: one calibrated JSON per (GPU, model, vLLM version) in ``twin_params/``.

Every number the twin needs about hardware and model lives here as data; the twin has no per-model code.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from adaptergym.errors import ProfileError

SCHEMA_VERSION = 1
DEFAULT_PROFILE = "h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5"
#: The serving framework of a profile that names none (every profile written before S-LoRA was modelled).
DEFAULT_FRAMEWORK = "vllm-v1"
GIB = 1024**3
#: Field metadata of fields added after profiles were first fingerprinted: hashed only when set to another
#: value than their default, so shipped sweep datasets stay valid for profiles that do not use them.
SINCE_FINGERPRINTS = {"fingerprint_if_set": True}

#: Step-time features, in the order the engine computes them (see ``StepTimeModel.step_ms``).
STEP_FEATURES = (
    "base_ms",  # fixed cost of one engine step (kernel launches, sampling setup)
    "per_decode_seq_ms",  # per sequence generating one token
    "per_prefill_token_ms",  # per prompt token computed in a prefill chunk
    "per_context_ktoken_ms",  # per 1,000 tokens of KV read by attention in the step
    "lora_base_ms",  # fixed cost of a step when LoRA is enabled
    "lora_per_token_ms",  # per batched token, scaled by max_lora_rank/16 (punica shrink/expand)
    "lora_per_ktoken_ms",  # per 1,000 batched tokens whatever the rank (LoRA kernels' per-token launch work)
    "lora_per_adapter_ms",  # per distinct adapter in the batch
    "lora_per_adapter_max_rank_ms",  # per distinct adapter, scaled by max_lora_rank/16 (slots are padded to it)
    "lora_per_slot_ms",  # per GPU adapter slot reserved (max_loras), even when idle: slot-wise kernel work
    "lora_per_slot_ktoken_ms",  # per slot per 1,000 batched tokens: LoRA kernels that walk every slot per token
    "lora_per_adapter_ktoken_ms",  # per distinct adapter per 1,000 batched tokens
    "lora_per_adapter_kcached_ms",  # per distinct adapter per 1,000 adapters in the CPU cache (vLLM lists the
    # cache for each adapter of the batch every step)
    "lora_per_exposed_adapter_ms",  # per distinct adapter whose weight reads the step's token work does not
    # hide: max(0, adapters - tokens / step_time.tokens_per_hidden_adapter) (a roofline, see docs/validation.md)
    "eager_ms",  # extra cost of a step too large for CUDA graphs (tokens > engine.cuda_graph_max_tokens)
)


@dataclass(frozen=True, slots=True)
class MemoryModel:
    """GPU memory accounting that decides KV capacity and whether vLLM starts."""

    gpu_memory_gib: float = field(default=64.0, metadata={"help": "physical GPU memory, GiB"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM's gpu_memory_utilization"})
    weights_gib: float = field(default=15.0, metadata={"help": "model weights, GiB"})
    activation_gib: float = field(default=5.0, metadata={"help": "peak activations + non-torch memory, GiB"})
    lora_slot_gib_per_rank: float = field(default=0.0055, metadata={"help": "LoRA buffer per slot per rank, GiB"})
    lora_slot_gib_fixed: float = field(default=0.0, metadata={"help": "LoRA buffer per slot, rank-independent, GiB"})
    kv_bytes_per_token: int = field(default=131072, metadata={"help": "KV cache bytes per token (all layers)"})
    max_model_len: int = field(default=131072, metadata={"help": "model context length vLLM must fit once"})
    kv_pool_tokens: int = field(default=0, metadata={
        "help": "a fixed pool of KV token slots that adapter weights share (S-LoRA's --max_total_token_num); "
                "0: the KV cache is what gpu_memory_utilization leaves (vLLM)", **SINCE_FINGERPRINTS})
    adapter_pages_per_rank: float = field(default=4.0, metadata={
        "help": "pool token slots one unit of adapter rank takes in a shared pool (S-LoRA keeps A and B of "
                "q, k, v, o as rows of the K and V buffers: 4 per rank)", **SINCE_FINGERPRINTS})

    def __post_init__(self) -> None:
        _positive(self, "gpu_memory_gib", "weights_gib", "kv_bytes_per_token", "max_model_len",
                  "adapter_pages_per_rank")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ProfileError("memory.gpu_memory_utilization: must be in (0, 1]")
        if self.kv_pool_tokens < 0:
            raise ProfileError(f"memory.kv_pool_tokens: {self.kv_pool_tokens} must be >= 0 (0: no fixed pool)")


@dataclass(frozen=True, slots=True)
class EngineDefaults:
    """vLLM engine settings of the runs the profile was fitted on, used when a run does not set them."""

    block_size: int = field(default=16, metadata={"help": "KV block size, tokens"})
    max_num_batched_tokens: int = field(default=2048, metadata={"help": "token budget per step"})
    max_num_seqs: int = field(default=2048, metadata={"help": "max running sequences"})
    max_lora_rank: int = field(default=32, metadata={"help": "default max_lora_rank"})
    max_waiting_requests: int = field(
        default=25500, metadata={"help": "waiting requests beyond which new arrivals are refused (measured cap)"}
    )
    cuda_graph_max_tokens: int = field(
        default=512, metadata={"help": "largest step (tokens) vLLM runs as a captured CUDA graph; larger is eager"}
    )
    admit_every_steps: int = field(default=1, metadata={
        "help": "decode steps between two admissions of waiting requests (S-LoRA's max_wait_tokens, 10; "
                "vLLM admits at every step)", **SINCE_FINGERPRINTS})
    idle_poll_ms: float = field(default=0.0, metadata={
        "help": "how often an idle scheduler looks for arrivals, ms (S-LoRA's router sleeps 10 ms when it has "
                "no batch; vLLM wakes on arrival: 0)", **SINCE_FINGERPRINTS})

    def __post_init__(self) -> None:
        _positive(self, "block_size", "max_num_batched_tokens", "max_num_seqs", "max_lora_rank",
                  "max_waiting_requests", "cuda_graph_max_tokens", "admit_every_steps")
        if self.idle_poll_ms < 0:
            raise ProfileError(f"engine.idle_poll_ms: {self.idle_poll_ms} must be >= 0")


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    """Engine step time (ms) as a linear model over the features in ``STEP_FEATURES``."""

    coefficients: dict[str, float] = field(default_factory=dict)
    tokens_per_hidden_adapter: float = field(default=4.0, metadata={
        "help": "batched tokens whose compute hides the weight reads of one distinct adapter: a step pays "
                "lora_per_exposed_adapter_ms for max(0, adapters - tokens / this)", **SINCE_FINGERPRINTS})

    def __post_init__(self) -> None:
        unknown = set(self.coefficients) - set(STEP_FEATURES)
        if unknown:
            raise ProfileError(f"step_time.coefficients: unknown term(s) {sorted(unknown)}; "
                               f"known: {', '.join(STEP_FEATURES)}")
        hiding = self.tokens_per_hidden_adapter
        if isinstance(hiding, bool) or not isinstance(hiding, (int, float)) or not 0 < hiding < float("inf"):
            raise ProfileError(f"step_time.tokens_per_hidden_adapter: {hiding!r} must be a number of tokens > 0")

    def vector(self) -> tuple[float, ...]:
        """Coefficients in ``STEP_FEATURES`` order (missing terms are 0)."""
        return tuple(float(self.coefficients.get(name, 0.0)) for name in STEP_FEATURES)


@dataclass(frozen=True, slots=True)
class LoadTimeModel:
    """Adapter load latency (ms) by adapter rank, interpolated linearly between measured ranks."""

    cpu_to_gpu_ms: dict[str, float] = field(default_factory=lambda: {"8": 6.0, "16": 6.5, "32": 7.0})
    disk_to_cpu_ms: dict[str, float] = field(default_factory=lambda: {"8": 20.0, "16": 25.0, "32": 35.0})
    api_server_new_adapter_ms: float = field(default=0.0, metadata={
        "help": "time vLLM's API server is held up by a request whose adapter it has not seen lately (see "
                "adaptergym.twin.frontend); requests behind it wait", **SINCE_FINGERPRINTS})

    def __post_init__(self) -> None:
        if not isinstance(self.api_server_new_adapter_ms, (int, float)) or self.api_server_new_adapter_ms < 0:
            raise ProfileError(f"loading.api_server_new_adapter_ms: {self.api_server_new_adapter_ms!r} must be a "
                               "number >= 0")
        for name in ("cpu_to_gpu_ms", "disk_to_cpu_ms"):
            table = getattr(self, name)
            if not table:
                raise ProfileError(f"loading.{name}: needs at least one rank -> ms entry")
            for rank, ms in table.items():
                if not str(rank).isdigit() or float(ms) < 0:
                    raise ProfileError(f"loading.{name}: entry {rank!r}: {ms!r} must map a rank to ms >= 0")


@dataclass(frozen=True, slots=True)
class SchedulerOverhead:
    """CPU time of one scheduler pass (ms), clipped at 0: linear in running requests and in waiting requests it
    walks past because every slot is taken by other adapters (vLLM's scheduler checks each one)."""

    base_ms: float = 0.2
    per_running_ms: float = 0.004
    per_skipped_ms: float = 0.0002


@dataclass(frozen=True, slots=True)
class StartupTimeModel:
    """Wall time from launching ``vllm serve`` until it serves (s): linear in ``max_loras``, because vLLM
    builds and warms up every adapter slot at start-up. Measured from the start-up logs of vLLM runs (see
    :mod:`adaptergym.calibration.startup_time`); a restart (new ``max_loras`` or ``max_lora_rank``) and a cold
    start both cost it."""

    base_s: float = field(default=170.0, metadata={"help": "start-up of a LoRA-enabled server, s (the intercept)"})
    per_lora_slot_s: float = field(default=3.7, metadata={"help": "extra start-up per GPU adapter slot, s"})

    def __post_init__(self) -> None:
        for name in ("base_s", "per_lora_slot_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ProfileError(f"startup_time.{name}: {value!r} must be a number >= 0 seconds")

    def seconds(self, max_loras: int) -> float:
        """Start-up time of a server with ``max_loras`` GPU adapter slots, s."""
        return self.base_s + self.per_lora_slot_s * max_loras


@dataclass(frozen=True, slots=True)
class TwinProfile:
    """Everything the twin knows about one (GPU, model, vLLM version)."""

    name: str
    gpu: str = "H100 64GB"
    model: str = "llama-3.1-8b-instruct"
    vllm_version: str = "0.8.5"
    framework: str = field(default=DEFAULT_FRAMEWORK, metadata={
        "help": "serving framework whose scheduler and memory the twin runs (a name in "
                "adaptergym.twin.frameworks: vllm-v1, slora)", **SINCE_FINGERPRINTS})
    memory: MemoryModel = field(default_factory=MemoryModel)
    engine: EngineDefaults = field(default_factory=EngineDefaults)
    step_time: StepTimeModel = field(default_factory=StepTimeModel)
    loading: LoadTimeModel = field(default_factory=LoadTimeModel)
    scheduler: SchedulerOverhead = field(default_factory=SchedulerOverhead)
    startup_time: StartupTimeModel = field(default_factory=StartupTimeModel)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ProfileError(f"profile {self.name!r}: schema_version {self.schema_version} is not supported "
                               f"(this adaptergym reads {SCHEMA_VERSION}); re-run `adaptergym calibrate`")

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> TwinProfile:
        return _build(cls, data, source)

    @classmethod
    def from_json(cls, path: str | Path) -> TwinProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ProfileError(f"profile {str(path)!r}: cannot read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile {str(path)!r}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint_dict(self) -> dict[str, Any]:
        """``to_dict`` without provenance, without the start-up time (only a fleet that reconfigures pays it,
        never a steady-state run) and without the fields added since fingerprints shipped that keep their default
        (see ``SINCE_FINGERPRINTS``): what a hash of "everything the twin reads" covers."""
        data = _without_unset(self)
        data.pop("provenance", None)
        data.pop("startup_time", None)
        return data

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct a (nested) profile dataclass from JSON, naming the field on any problem."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        sub = type(default()) if default is not None else None
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value, f"{where}: {name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ProfileError(f"{where}: {exc}") from None


def _without_unset(obj: Any) -> dict[str, Any]:
    """A (nested) profile dataclass as a dict, leaving out ``SINCE_FINGERPRINTS`` fields at their default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("fingerprint_if_set") and value == f.default:
            continue
        out[f.name] = _without_unset(value) if dataclasses.is_dataclass(value) else value
    return out


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or value <= 0:
            raise ProfileError(f"{type(obj).__name__}.{name}: {value!r} must be a number > 0")


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``twin_params/``."""
    return sorted(p.name[:-5] for p in resources.files("twin_params").iterdir() if p.name.endswith(".json"))


def _shipped_path(name: str) -> str:
    return str(resources.files("twin_params").joinpath(name + ".json"))


def shipped_systems() -> dict[str, tuple[str, str]]:
    """Each shipped profile's (model, framework), read from the profile itself (not from its file name)."""
    systems = {}
    for name in shipped_profiles():
        data = json.loads(Path(_shipped_path(name)).read_text())
        systems[name] = (str(data.get("model", "")), str(data.get("framework", DEFAULT_FRAMEWORK)))
    return systems


def find_profile(model: str, framework: str = DEFAULT_FRAMEWORK) -> TwinProfile:
    """The shipped profile of ``model`` served by ``framework`` (how ``validate --profile auto`` picks a row's)."""
    systems = shipped_systems()
    matches = [name for name, system in systems.items() if system == (model, framework)]
    if len(matches) == 1:
        return TwinProfile.from_json(_shipped_path(matches[0]))
    known = ", ".join(f"{m} on {f}" for m, f in sorted(set(systems.values())))
    what = "several" if matches else "no"
    raise ProfileError(f"{what} shipped profile for model {model!r} on framework {framework!r} "
                       f"(shipped: {known}); pass --profile NAME or calibrate one")


def load_profile(name_or_path: str | Path | None = None) -> TwinProfile:
    """Load a profile by shipped name, by model name (its profile on the default framework, vLLM V1), or by path
    to a JSON file."""
    if isinstance(name_or_path, TwinProfile):
        return name_or_path
    key = str(name_or_path or DEFAULT_PROFILE)
    if Path(key).is_file():
        return TwinProfile.from_json(key)
    names = shipped_profiles()
    stem = key[:-5] if key.endswith(".json") else key
    if stem in names:
        return TwinProfile.from_json(_shipped_path(stem))
    if any(model == stem for model, _ in shipped_systems().values()):
        return find_profile(stem)
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ProfileError(f"unknown profile {key!r}: not a file and not a shipped profile.{hint} "
                       f"Shipped: {', '.join(names)}")
