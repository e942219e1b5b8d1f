"""Runs the twin's engine against the wall clock (times ``speed``) and tells waiting HTTP requests of progress.

The loop mirrors vLLM's engine core: run the steps that start before *now*; a step that ends in the future
holds its tokens until the clock reaches its end, then every request that produced a token is woken. An
idle engine sleeps until the next request reaches it. Requests are stamped with the simulated time at which
the HTTP handler submits them and pass vLLM's API server (:class:`adaptergym.twin.frontend.ApiServer`, started
cold like a fresh vLLM): the first request of an adapter it has not resolved lately holds it up, and the
requests behind wait, before reaching the engine. A request that reaches the engine during a step waits for
the next one, as in vLLM. When the loop falls behind (CPU contention, high ``speed``), it catches up step by
step and delivers the late tokens together.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import numpy as np

from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.frontend import ApiServer
from adaptergym.twin.record import REFUSED


class ScaledClock:
    """Simulated seconds since start: wall-clock seconds times ``speed``."""

    def __init__(self, speed: float = 1.0) -> None:
        if not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"speed: {speed!r} must be a finite number > 0")
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def wall_seconds_until(self, sim_time: float) -> float:
        return (sim_time - self.now()) / self.speed


class Watch:
    """One request's progress as the HTTP handler sees it; ``changed`` is set whenever the driver updates it."""

    __slots__ = ("changed", "finished", "first_token_s", "generated", "refused", "rid", "taken")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.changed = asyncio.Event()
        self.taken = False  # in the engine's waiting queue (or refused)
        self.refused = False  # the waiting queue was full
        self.generated = 0
        self.finished = False
        self.first_token_s = math.nan


class TwinDriver:
    """Owns the engine, the API server ahead of it and the clock; HTTP handlers :meth:`submit` requests and await
    their ``Watch``."""

    def __init__(self, engine: ReplicaEngine, api_server: ApiServer, speed: float = 1.0) -> None:
        self.engine = engine
        self.api_server = api_server
        self.clock = ScaledClock(speed)
        self._watches: dict[int, Watch] = {}
        self._arrival = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the clock (simulated time 0) and the engine loop in the running event loop."""
        self.clock = ScaledClock(self.clock.speed)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, adapter: int, prompt_tokens: int, max_tokens: int) -> Watch:
        """Hand a request, sent now, to the API server, and to the engine for when the server lets it through."""
        reached = self.api_server.departures(np.array([self.clock.now()]), np.array([adapter]))
        rid = self.engine.submit(float(reached[0]), adapter, prompt_tokens, max_tokens)
        watch = Watch(rid)
        self._watches[rid] = watch
        self._arrival.set()
        return watch

    def forget(self, watch: Watch) -> None:
        """The client is gone; stop reporting on this request (the twin keeps running it)."""
        self._watches.pop(watch.rid, None)

    async def _run(self) -> None:
        engine, clock = self.engine, self.clock
        while True:
            self._arrival.clear()
            target, start, steps = clock.now(), engine.now, engine.steps
            engine.run_until(target)
            # The last step may end in the future: its tokens are out only then (sleep(0) still lets the
            # HTTP handlers run when the loop is behind).
            await asyncio.sleep(max(0.0, clock.wall_seconds_until(engine.now)))
            self._publish()
            # Nothing can run before the next request reaches the engine when none is in it, or when a step was
            # due and could schedule none of the waiting ones.
            stalled = target > start and engine.steps == steps
            if engine.n_running == 0 and (engine.n_waiting == 0 or stalled):
                await self._next_arrival()

    async def _next_arrival(self) -> None:
        """Sleep until the earliest request held at the API server reaches the engine, or a new one is
        submitted."""
        engine = self.engine
        held = engine.n_arrived < engine.n_requests
        timeout = max(0.0, self.clock.wall_seconds_until(float(engine.arrival_s[engine.n_arrived]))) if held else None
        with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before Python 3.11
            await asyncio.wait_for(self._arrival.wait(), timeout)

    def _publish(self) -> None:
        """Wake the handlers whose requests were taken, produced tokens or finished."""
        if not self._watches:
            return
        engine = self.engine
        rids = np.fromiter(self._watches, np.int64, len(self._watches))
        generated = engine.generated_tokens()[rids]
        finished = np.isfinite(engine.finish_s[rids])
        first = engine.first_token_s[rids]
        for k in range(rids.size):
            watch = self._watches[int(rids[k])]
            changed = False
            if not watch.taken and watch.rid < engine.n_arrived:
                watch.taken = True
                watch.refused = bool(engine.flags[watch.rid] == REFUSED)
                changed = True
            if generated[k] != watch.generated or finished[k]:
                watch.generated = int(generated[k])
                watch.finished = bool(finished[k])
                watch.first_token_s = float(first[k])
                changed = True
            if changed:
                watch.changed.set()
            if watch.finished or watch.refused:
                del self._watches[watch.rid]
