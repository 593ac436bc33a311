"""Serving a fake platform (an ASGI app) on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: ASGIApp) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """The running server, its task, and its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task, f"http://127.0.0.1:{port}"
