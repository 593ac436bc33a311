"""Flow 1 and 4 of SPEC.md end to end: a Telegram message reaches an agent, the reply goes back.

Runs against the product as started by `python -m services`, in both modes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Console, Product

pytestmark = pytest.mark.e2e

BOT_TOKEN = "123456:TEST-token_abc"
SECRET = "s3cret-Token_1"


def telegram_update(
    update_id: int, text: str, *, user_id: int = 555, message_id: int | None = None
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id or update_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Ivan"},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": "Ivan",
                "last_name": "Petrov",
                "username": "ivanp",
            },
            "text": text,
        },
    }


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


def _get(data: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("__"):
        data = data[key]
    return data


async def setup_desk(
    product: Product, fake: FakeTelegram
) -> tuple[Console, Console, dict[str, Any]]:
    admin = await Console.login(product, "admin", ADMIN_PASSWORD)
    agent = (
        await admin.http.post(
            "/api/admin/agents",
            json={
                "username": "anna",
                "password": "anna-password",
                "display_name": "Anna",
                "role": "agent",
            },
        )
    ).json()
    queue = (
        await admin.http.post(
            "/api/admin/queues",
            json={
                "name": "Support",
                "agent_ids": [agent["id"]],
                "accept_timeout_s": 60,
                "reply_timeout_s": 300,
            },
        )
    ).json()
    response = await admin.http.post(
        "/api/admin/channels",
        json={
            "kind": "telegram",
            "name": "Support bot",
            "queue_id": queue["id"],
            "token": BOT_TOKEN,
            "secret": SECRET,
            "api_base": fake.url,
        },
    )
    assert response.status_code == 201, response.text
    channel = response.json()
    assert BOT_TOKEN not in response.text and SECRET not in response.text
    anna = await Console.login(product, "anna", "anna-password")
    return admin, anna, channel


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


async def test_telegram_message_reaches_agent_and_reply_goes_back(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    assert anna.me["status"] == "inactive"
    async with Stream(anna.ws_url()) as stream:
        response = await anna.http.put("/api/me/status", json={"status": "active"})
        assert response.json()["status"] == "active"

        response = await post_update(
            product, channel["id"], telegram_update(1, "Hello, my order is late")
        )
        assert response.status_code == 200, response.text

        offered = await stream.wait_for("chat.offered")
        chat_id = offered["data"]["chat_id"]
        new = (await anna.http.get("/api/chats", params={"view": "new"})).json()
        assert [c["id"] for c in new] == [chat_id]
        assert new[0]["status"] == "new"
        assert new[0]["contact_name"] == "Ivan Petrov"

        accepted = (await anna.http.post(f"/api/chats/{chat_id}/accept")).json()
        assert accepted["status"] == "active" and accepted["agent_id"] == anna.me["id"]
        active = (await anna.http.get("/api/chats", params={"view": "active"})).json()
        assert [(c["id"], c["agent_id"]) for c in active] == [(chat_id, anna.me["id"])]
        assert (await anna.http.get("/api/chats", params={"view": "new"})).json() == []

        response = await anna.http.post(
            f"/api/chats/{chat_id}/messages", json={"text": "Let me check"}
        )
        assert response.status_code == 201, response.text
        calls = await fake_telegram.wait_sent(1)
        assert calls[-1].token == BOT_TOKEN
        assert calls[-1].params == {"chat_id": "555", "text": "Let me check"}
        status = await stream.wait_for(
            "chat.message_status_changed", message__delivery_status="sent"
        )
        assert status["data"]["chat_id"] == chat_id

        # The same update again, and a new message: one more message in the same chat.
        assert (
            await post_update(product, channel["id"], telegram_update(1, "Hello, my order is late"))
        ).status_code == 200
        assert (
            await post_update(product, channel["id"], telegram_update(2, "Order 42"))
        ).status_code == 200
        await stream.wait_for("chat.message_received", message__text="Order 42")
        messages = (await anna.http.get(f"/api/chats/{chat_id}/messages")).json()
        assert [(m["direction"], m["text"]) for m in messages] == [
            ("in", "Hello, my order is late"),
            ("out", "Let me check"),
            ("in", "Order 42"),
        ]
        assert messages[1]["attachments"] == [] and messages[1]["created_at"]

        contact = (await anna.http.get(f"/api/contacts/{accepted['contact_id']}")).json()
        assert contact["name"] == "Ivan Petrov"

    # Another agent, not in the queue, sees nothing of it and cannot touch it.
    await admin.http.post(
        "/api/admin/agents",
        json={"username": "boris", "password": "boris-password", "display_name": "Boris"},
    )
    boris = await Console.login(product, "boris", "boris-password")
    assert (await boris.http.get(f"/api/chats/{chat_id}")).status_code == 404
    assert (await boris.http.get(f"/api/chats/{chat_id}/messages")).status_code == 404
    reply = await boris.http.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"})
    assert reply.status_code == 404
    assert (await boris.http.post(f"/api/chats/{chat_id}/accept")).status_code == 404
    assert (await boris.http.get("/api/chats", params={"view": "active"})).json() == []
    assert (await boris.http.post("/api/admin/agents", json={})).status_code == 403

    # Secrets never reach the logs.
    log = product.log()
    for secret in (BOT_TOKEN, SECRET, ADMIN_PASSWORD, anna.token, admin.token):
        assert secret not in log
    for console in (admin, anna, boris):
        await console.close()


async def test_logout_makes_agent_inactive_and_login_restores_status(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, _ = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    assert (await anna.http.post("/api/auth/logout")).status_code == 204
    assert (await anna.http.get("/api/me")).status_code == 401  # the token is revoked
    me = (await admin.http.get("/api/admin/agents")).json()
    assert {a["username"] for a in me} == {"admin", "anna"}

    again = await Console.login(product, "anna", "anna-password")
    assert again.me["status"] == "active"
    assert (await again.http.get("/api/me")).json()["status"] == "active"
    for console in (admin, anna, again):
        await console.close()


async def test_bad_webhooks_are_refused_and_publish_nothing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})

    wrong = await post_update(product, channel["id"], telegram_update(10, "x"), secret="wrong")
    assert wrong.status_code == 401 and wrong.json()["detail"]
    missing = await post_update(product, channel["id"], telegram_update(11, "x"), secret=None)
    assert missing.status_code == 401
    malformed = await post_update(product, channel["id"], b"{not json")
    assert malformed.status_code == 400 and "JSON" in malformed.json()["detail"]
    not_update = await post_update(product, channel["id"], {"message": {"text": "no update_id"}})
    assert not_update.status_code == 400 and not_update.json()["detail"]["errors"]
    unknown = await post_update(product, "no-such-channel", telegram_update(12, "x"))
    assert unknown.status_code == 404

    # A good update afterwards is the only chat the agent is offered.
    assert (
        await post_update(product, channel["id"], telegram_update(13, "real one"))
    ).status_code == 200
    deadline = time.monotonic() + 20
    while not (new := (await anna.http.get("/api/chats", params={"view": "new"})).json()):
        assert time.monotonic() < deadline, "the good update never became a chat"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    new = (await anna.http.get("/api/chats", params={"view": "new"})).json()
    assert len(new) == 1
    messages = (await anna.http.get(f"/api/chats/{new[0]['id']}/messages")).json()
    assert [m["text"] for m in messages] == ["real one"]
    await admin.close()
    await anna.close()
