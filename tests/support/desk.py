"""A support desk set up through the admin API, and what a customer and an agent do with it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import websockets

from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Console, Product

SECRET = "s3cret-Token_1"
AGENT_PASSWORD = "agent-password"
T = TypeVar("T")


def new_bot_token() -> str:
    """A bot token of a new bot (a bot is one channel): `<bot id>:<secret part>`."""
    return f"{10**9 + secrets.randbelow(9 * 10**9)}:TEST-{secrets.token_urlsafe(12)}"


def telegram_update(
    update_id: int,
    text: str,
    *,
    user_id: int = 555,
    message_id: int | None = None,
    first_name: str = "Ivan",
    last_name: str | None = "Petrov",
    username: str = "ivanp",
    date: int | None = None,
) -> dict[str, Any]:
    """A Telegram `Update` with a private text message, as the Bot API sends it."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id or update_id,
            "date": date or int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": first_name},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name,
                # The Bot API leaves out the optional fields a user does not have.
                **({"last_name": last_name} if last_name is not None else {}),
                "username": username,
            },
            "text": text,
        },
    }


def edited_update(
    update_id: int, message_id: int, text: str, *, user_id: int = 555, date: int | None = None
) -> dict[str, Any]:
    """A Telegram `Update` with `edited_message`: the customer changed message `message_id`."""
    sent = date or int(time.time()) - 5
    return {
        "update_id": update_id,
        "edited_message": {
            "message_id": message_id,
            "date": sent,
            "edit_date": max(sent + 1, int(time.time())),
            "chat": {"id": user_id, "type": "private", "first_name": "Ivan"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Ivan", "last_name": "Petrov"},
            "text": text,
        },
    }


async def eventually(
    probe: Callable[[], Awaitable[T]], ready: Callable[[T], bool], *, timeout: float = 20
) -> T:
    """Probe until `ready` says yes (what the console sees settles asynchronously)."""
    deadline = time.monotonic() + timeout
    while not ready(value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still not ready after {timeout}s: {value!r}")
        await asyncio.sleep(0.05)
    return value


class Stream:
    """An agent's WebSocket, collecting events in the background."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> Stream:
        self.ws = await websockets.connect(self.url)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            self.events.append(json.loads(raw))

    async def __aexit__(self, *_: object) -> None:
        self.task.cancel()
        await self.ws.close()

    async def wait_for(self, type_: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["type"] == type_ and all(
                    _get(event["data"], k) == v for k, v in match.items()
                ):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type_} {match} in {self.events}")
            await asyncio.sleep(0.05)


def _get(data: Any, dotted: str) -> Any:
    """`message__attachments__0__state`: keys of objects, indexes of lists (None if absent)."""
    for key in dotted.split("__"):
        if isinstance(data, list):
            data = data[int(key)] if int(key) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(key)
        else:
            return None
    return data


async def setup_desk(
    product: Product, fake: FakeTelegram, *, token: str | None = None
) -> tuple[Console, Console, dict[str, Any]]:
    """A new agent, queue and Telegram channel of a new bot (names unique, as tests share the
    product); `token` is the bot's, a new one unless given."""
    admin, agent, queue = await agent_and_queue(product)
    token = token or new_bot_token()
    response = await admin.http.post(
        "/api/admin/channels",
        json={
            "kind": "telegram",
            "name": "Support bot",
            "queue_id": queue["id"],
            "token": token,
            "secret": SECRET,
            "api_base": fake.url,
        },
    )
    assert response.status_code == 201, response.text
    channel = response.json()
    assert token not in response.text and SECRET not in response.text
    anna = await Console.login(product, agent["username"], AGENT_PASSWORD)
    return admin, anna, channel


async def agent_and_queue(product: Product) -> tuple[Console, dict[str, Any], dict[str, Any]]:
    """The admin's console, and a new agent in a new queue (names unique)."""
    suffix = secrets.token_hex(4)
    admin = await Console.login(product, "admin", ADMIN_PASSWORD)
    agent = (
        await admin.http.post(
            "/api/admin/agents",
            json={
                "username": f"anna-{suffix}",
                "password": AGENT_PASSWORD,
                "display_name": "Anna",
                "role": "agent",
            },
        )
    ).json()
    queue = (
        await admin.http.post(
            "/api/admin/queues",
            json={
                "name": f"Support {suffix}",
                "agent_ids": [agent["id"]],
                "accept_timeout_s": 60,
                "reply_timeout_s": 300,
            },
        )
    ).json()
    return admin, agent, queue


async def post_update(
    product: Product, channel_id: str, update: Any, secret: str | None = SECRET
) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    async with httpx.AsyncClient(base_url=product.ingest) as client:
        if isinstance(update, bytes):
            return await client.post(
                f"/webhooks/telegram/{channel_id}", content=update, headers=headers
            )
        return await client.post(f"/webhooks/telegram/{channel_id}", json=update, headers=headers)
