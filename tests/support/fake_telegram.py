"""A local stand-in for the Telegram Bot API: same URLs, same JSON shapes, scriptable errors.

Channels point their `api_base` at it. It records every call so tests can assert what the
customer would have received.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]


@dataclass
class FakeTelegram:
    calls: list[Call] = field(default_factory=list)
    # method -> queue of error answers to give before succeeding, e.g.
    # {"sendMessage": [(403, "Forbidden: bot was blocked by the user")]}
    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    url: str = ""

    def sent(self, method: str = "sendMessage") -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_sent(
        self, count: int, method: str = "sendMessage", timeout: float = 15
    ) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.sent(method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} calls, got {self.sent(method)}")
            await asyncio.sleep(0.05)
        return self.sent(method)

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        form = await request.form()
        params: dict[str, Any] = {k: v for k, v in form.items()}
        self.calls.append(Call(token, method, params))
        if self.errors.get(method):
            code, description = self.errors[method].pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
            if code == 429:
                body["parameters"] = {"retry_after": 1}
            return JSONResponse(body, status_code=code)
        return JSONResponse({"ok": True, "result": self._result(token, method, params)})

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        bot_id = int(token.split(":")[0])
        if method == "getMe":
            return {"id": bot_id, "is_bot": True, "first_name": "Fake bot", "username": "fake_bot"}
        if method == "sendMessage":
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": {"id": bot_id, "is_bot": True, "first_name": "Fake bot"},
                "text": params.get("text", ""),
            }
        return True

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(fake: FakeTelegram) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    fake.url = f"http://127.0.0.1:{port}"
    return server, task
