"""Server configuration advice: the vLLM flags one GPU should run a workload with, found by Optuna over a fast
estimate and decided by the twin (:mod:`.advisor`), and the batching-configuration-advisor study of how much
KV cache near-peak throughput needs (:mod:`.bca`).

    from adaptergym.advise import advise
    advice = advise(workload, "llama-3.1-8b-instruct", objective="memory", slo_ttft_ms=500)
    advice.vllm_command()       # vllm serve ... --gpu-memory-utilization 0.55 ...
"""

from adaptergym.advise.advisor import Advice, AdviceError, advise
from adaptergym.advise.judge import OBJECTIVES, Verdict

__all__ = ["OBJECTIVES", "Advice", "AdviceError", "Verdict", "advise"]
