"""One OpenMP thread for scikit-learn's histogram boosting: on a small shared box, its spinning worker threads
make a fit many times slower than one thread does (25x on the 2-core dev box, shared)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_openmp_thread() -> AbstractContextManager[Any]:
    """Context manager: OpenMP libraries limited to one thread inside it."""
    return _controller().limit(limits=1, user_api="openmp")
