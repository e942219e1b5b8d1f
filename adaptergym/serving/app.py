"""The twin server: vLLM's OpenAI-compatible HTTP surface (aiohttp) over one twin replica in real time.

Routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (streamed as SSE or whole),
``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter`` (always enabled; vLLM needs
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` for them), ``/metrics``, ``/health`` and ``/version``.
Timing, queueing, adapter slots, KV cache and refusals are the twin's, and so is vLLM's API server ahead of the
engine, which holds up the first request of an adapter it has not resolved lately (a runtime load does not
resolve it); tokens are placeholders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import numpy as np
from aiohttp import web

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.serving import prometheus
from adaptergym.serving.driver import TwinDriver, Watch
from adaptergym.serving.models import ServedModels
from adaptergym.serving.protocol import APIError, Reply, bad_request, parse_request
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.frameworks import check_startup, framework_of
from adaptergym.workload.requests import RequestBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdapterSource:
    """An adapter to serve from start-up: its name, rank and (optional) path."""

    name: str
    rank: int
    path: str = ""


@dataclass
class TwinServer:
    """Everything one running server holds."""

    profile: TwinProfile
    config: ServerConfig
    driver: TwinDriver
    models: ServedModels

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len or self.profile.memory.max_model_len


def build_server(profile: TwinProfile, config: ServerConfig, adapters: Sequence[AdapterSource], *,
                 speed: float = 1.0, served_model_name: str | None = None,
                 max_waiting_queue_length: int | None = None) -> TwinServer:
    """Check start-up as vLLM would and build the engine; raises ConfigError for a config vLLM refuses.

    Args:
        profile: calibrated profile of the simulated GPU and model.
        config: resolved server flags (``ServerConfig.resolved``).
        adapters: adapters served from start-up (more can be loaded at run time when LoRA is enabled).
        speed: simulated seconds per wall-clock second.
        served_model_name: the base model's name in the API (default: the profile's model).
        max_waiting_queue_length: waiting requests beyond which new ones get HTTP 503 (default: the
            profile's measured cap, ``engine.max_waiting_requests``).
    """
    if not framework_of(profile).online:
        raise ConfigError(f"profile {profile.name!r}: its framework {profile.framework!r} is simulated over request "
                          "batches only; adaptergym serve needs a profile whose framework takes requests online "
                          "(vllm-v1)")
    if max_waiting_queue_length is not None:
        if max_waiting_queue_length < 1:
            raise ConfigError(f"--max-waiting-queue-length: {max_waiting_queue_length} must be >= 1")
        engine_defaults = dataclasses.replace(profile.engine, max_waiting_requests=max_waiting_queue_length)
        profile = dataclasses.replace(profile, engine=engine_defaults)
    startup = check_startup(profile, config)
    if not startup.ok:
        raise ConfigError(f"vLLM would not start with this configuration ({startup.status}): {startup.message}")
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise ConfigError(f"adapters: duplicate name(s) {sorted({n for n in names if names.count(n) > 1})}")
    base = served_model_name or profile.model
    if config.enable_lora:
        ids, ranks = tuple(names), np.array([a.rank for a in adapters], np.int64)
    else:  # no LoRA: the base model is the engine's only "adapter", never loaded
        ids, ranks = (base,), np.zeros(1, np.int64)
    empty = np.empty(0)
    batch = RequestBatch(empty, empty.astype(np.int64), empty.astype(np.int64), empty.astype(np.int64), ids, ranks,
                         np.inf)
    engine = ReplicaEngine(profile, config, batch, startup)
    models = ServedModels(base, engine, int(config.max_lora_rank or 0), config.enable_lora)
    for index, adapter in enumerate(adapters if config.enable_lora else ()):
        try:
            models.register(adapter.name, adapter.rank, adapter.path, index)
        except ValueError as exc:
            raise ConfigError(f"adapter {adapter.name!r}: {exc} Raise --max-lora-rank.") from None
    # Cold, as a freshly started vLLM: its API server has resolved no adapter yet (as in a static run).
    api_server = framework_of(profile).api_server(profile, config, ())
    return TwinServer(profile, config, TwinDriver(engine, api_server, speed), models)


def _error(exc: APIError) -> web.Response:
    return web.json_response(exc.body(), status=int(exc.status))


async def _changed(watch: Watch) -> None:
    await watch.changed.wait()
    watch.changed.clear()


def create_app(server: TwinServer) -> web.Application:
    """The aiohttp application; the engine loop starts and stops with it."""
    driver, models = server.driver, server.models
    app = web.Application()

    async def start(_app: web.Application) -> None:
        driver.start()

    async def stop(_app: web.Application) -> None:
        await driver.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    async def json_body(request: web.Request) -> object:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("the request body is not valid JSON") from None

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            gen = parse_request(await json_body(request), chat, server.max_model_len)
            adapter = models.adapter_index(gen.model)
        except APIError as exc:
            return _error(exc)
        reply = Reply(gen, gen.model or models.base_model)
        watch = driver.submit(adapter, gen.prompt_tokens, gen.max_tokens)
        try:
            while not watch.taken:
                await _changed(watch)
            if watch.refused:
                limit = driver.engine.max_waiting
                return _error(APIError(HTTPStatus.SERVICE_UNAVAILABLE, f"The waiting queue is full ({limit} "
                                       f"requests); request {reply.id} was rejected.", "ServiceUnavailableError"))
            if not gen.stream:
                while not watch.finished:
                    await _changed(watch)
                return web.json_response(reply.whole(watch.generated))
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            sent = 0
            try:
                while True:
                    if watch.generated > sent:
                        await response.write(reply.tokens(sent, watch.generated))
                        sent = watch.generated
                    if watch.finished:
                        break
                    await _changed(watch)
                await response.write(reply.stream_end(sent))
                await response.write_eof()
            except ConnectionResetError:  # the client left mid-stream; nothing to tell it
                pass
            return response
        finally:
            driver.forget(watch)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=False)

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=True)

    async def list_models(_request: web.Request) -> web.Response:
        return web.json_response(models.listing(server.max_model_len))

    async def load_adapter(request: web.Request) -> web.Response:
        try:
            return web.Response(text=models.load(await json_body(request)))
        except APIError as exc:
            return _error(exc)

    async def unload_adapter(request: web.Request) -> web.Response:
        try:
            return web.Response(text=models.unload(await json_body(request)))
        except APIError as exc:
            return _error(exc)

    async def metrics(_request: web.Request) -> web.Response:
        text = prometheus.render(driver.engine, models, server.config.max_loras, driver.clock.now())
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def health(_request: web.Request) -> web.Response:
        return web.Response()

    async def version(_request: web.Request) -> web.Response:
        c = server.config
        flags = {"max_loras": c.max_loras, "max_cpu_loras": c.max_cpu_loras, "max_lora_rank": c.max_lora_rank,
                 "max_num_seqs": c.max_num_seqs, "max_num_batched_tokens": c.max_num_batched_tokens}
        return web.json_response({"version": server.profile.vllm_version, "twin_profile": server.profile.name,
                                  "gpu": server.profile.gpu, "speed": driver.clock.speed, "config": flags})

    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/load_lora_adapter", load_adapter)
    app.router.add_post("/v1/unload_lora_adapter", unload_adapter)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    return app


def run(server: TwinServer, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (Ctrl-C); raises ConfigError when the port cannot be opened."""
    log.info("adaptergym serve: twin of %s on http://%s:%d (speed %g, %d adapters, max_loras %d, KV cache %d "
             "tokens)", server.profile.name, host, port, server.driver.clock.speed, len(server.models.adapters),
             server.config.max_loras, server.driver.engine.startup.kv_cache_tokens)
    try:
        web.run_app(create_app(server), host=host, port=port, print=None, access_log=None)
    except OSError as exc:
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None

