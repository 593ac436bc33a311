"""A local stand-in for the Telegram Bot API: same URLs, same JSON shapes, scriptable errors.

Channels point their `api_base` at it. It serves, per bot token:
- `getMe` — the bot (its id is the token's number), or 401 for a token in `refused_tokens`;
- `setWebhook`, `deleteWebhook`, `getWebhookInfo` — one webhook per bot, as Telegram keeps it;
- `getUpdates` — long polling over the updates a test `push`es: `offset` confirms (forgets) the
  updates below it, an empty queue waits up to `timeout` (at most `max_wait_s`), a second
  getUpdates ends the waiting one with 409, and a set webhook makes it 409 too;
- `sendMessage` — answers the sent Message.
Every other method answers `true`. It records every call, and answers the errors a test
scripts in `errors`, in Telegram's shape: `{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# As Telegram answers them.
UNAUTHORIZED = (401, "Unauthorized")
BLOCKED = (403, "Forbidden: bot was blocked by the user")
DEACTIVATED = (403, "Forbidden: user is deactivated")
TOO_MANY_REQUESTS = (429, "Too Many Requests: retry after 1")
BAD_GATEWAY = (502, "Bad Gateway")
WEBHOOK_ACTIVE = (
    409,
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first",
)
OTHER_POLLER = (
    409,
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running",
)


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    allowed_updates: list[str] | None


@dataclass
class BotState:
    """What Telegram keeps for one bot."""

    webhook: Webhook | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)  # not yet confirmed
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    polls: int = 0  # getUpdates requests so far: a newer one ends a waiting one
    last_error: tuple[int, str] | None = None  # a webhook delivery error: (unix time, message)


@dataclass
class FakeTelegram:
    calls: list[Call] = field(default_factory=list)
    # method -> queue of error answers to give before succeeding, e.g.
    # {"sendMessage": [(403, "Forbidden: bot was blocked by the user")]}
    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    refused_tokens: set[str] = field(default_factory=set)
    bots: dict[str, BotState] = field(default_factory=dict)
    max_wait_s: float = 1.0  # a long poll here waits at most this long: tests stay quick
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

    def bot(self, token: str) -> BotState:
        return self.bots.setdefault(token, BotState())

    def push(self, token: str, *updates: dict[str, Any]) -> None:
        """Updates for the bot's getUpdates queue, as if customers had just written."""
        state = self.bot(token)
        state.updates.extend(updates)
        state.arrived.set()

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        form = await request.form()
        params: dict[str, Any] = {k: v for k, v in form.items()}
        self.calls.append(Call(token, method, params, time.monotonic()))
        if self.errors.get(method):
            return _error(*self.errors[method].pop(0))
        if token in self.refused_tokens:
            return _error(*UNAUTHORIZED)
        if method == "getUpdates":
            return await self._get_updates(token, params)
        answer = self._result(token, method, params)
        if isinstance(answer, JSONResponse):
            return answer
        return JSONResponse({"ok": True, "result": answer})

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        bot_id = int(token.split(":")[0])
        state = self.bot(token)
        if method == "getMe":
            return {
                "id": bot_id,
                "is_bot": True,
                "first_name": "Fake bot",
                "username": f"fake_{bot_id}_bot",
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        if method == "setWebhook":
            allowed = params.get("allowed_updates")
            state.webhook = Webhook(
                params["url"],
                params.get("secret_token"),
                json.loads(allowed) if allowed else None,
            )
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "deleteWebhook":
            description = "Webhook was deleted" if state.webhook else "Webhook is already deleted"
            state.webhook = None
            if params.get("drop_pending_updates") in ("true", "True", "1"):
                state.updates.clear()
            return JSONResponse({"ok": True, "result": True, "description": description})
        if method == "getWebhookInfo":
            return self._webhook_info(state)
        if method == "sendMessage":
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": {"id": bot_id, "is_bot": True, "first_name": "Fake bot"},
                "text": params.get("text", ""),
            }
        return True

    def _webhook_info(self, state: BotState) -> dict[str, Any]:
        if state.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        info: dict[str, Any] = {
            "url": state.webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
            "max_connections": 40,
            "ip_address": "127.0.0.1",
        }
        if state.webhook.allowed_updates is not None:
            info["allowed_updates"] = state.webhook.allowed_updates
        if state.last_error is not None:
            info["last_error_date"], info["last_error_message"] = state.last_error
        return info

    async def _get_updates(self, token: str, params: dict[str, Any]) -> JSONResponse:
        state = self.bot(token)
        if state.webhook is not None:
            return _error(*WEBHOOK_ACTIVE)
        state.polls += 1
        mine = state.polls
        state.arrived.set()  # wakes a waiting getUpdates, which then answers 409
        offset = int(params["offset"]) if params.get("offset") else None
        if offset is not None:  # an update is confirmed once an offset above it is asked for
            state.updates = [u for u in state.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), self.max_wait_s)
        while not state.updates and time.monotonic() < deadline:
            state.arrived.clear()
            try:
                await asyncio.wait_for(state.arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
            if state.polls != mine:
                return _error(*OTHER_POLLER)
        limit = int(params.get("limit") or 100)
        return JSONResponse({"ok": True, "result": state.updates[:limit]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )


def _error(code: int, description: str) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if code == 429:
        body["parameters"] = {"retry_after": 1}
    return JSONResponse(body, status_code=code)


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
