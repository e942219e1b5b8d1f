"""Run a twin server in a background thread (its own event loop), e.g. to point ``collect`` at it in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from adaptergym.serving.app import TwinServer, create_app

SHUTDOWN_GRACE_S = 2.0


@contextmanager
def serve_in_background(server: TwinServer | web.Application, host: str = "127.0.0.1",
                        port: int = 0) -> Iterator[str]:
    """Serve a twin server (or any aiohttp app) while the ``with`` block runs; yields its base URL.

    ``port=0`` picks a free port. On exit, requests still in flight get ``SHUTDOWN_GRACE_S`` to finish.
    """
    loop = asyncio.new_event_loop()
    app = create_app(server) if isinstance(server, TwinServer) else server
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        return f"http://{host}:{bound}"

    thread = threading.Thread(target=loop.run_forever, name="adaptergym-serve", daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
