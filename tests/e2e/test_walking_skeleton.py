"""Flow 1 and 4 of SPEC.md end to end: a Telegram message reaches an agent, the reply goes back.

Runs against the product as started by `python -m services`, in both modes.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.desk import (
    AGENT_PASSWORD,
    SECRET,
    Stream,
    eventually,
    new_bot_token,
    post_update,
    setup_desk,
    telegram_update,
)
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Console, Product

pytestmark = pytest.mark.e2e


class Not:
    """Matches any value but one (for `Stream.wait_for`)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return other != self.value


async def test_telegram_message_reaches_agent_and_reply_goes_back(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, anna, channel = await setup_desk(product, fake_telegram, token=token)
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
        assert calls[-1].token == token
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

        # Flow 5: the agent completes the chat; the customer's next message opens a new one.
        done = await anna.http.post(f"/api/chats/{chat_id}/complete")
        assert done.status_code == 200 and done.json()["status"] == "completed"
        late = await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "one more"})
        assert late.status_code == 409 and late.json()["detail"] == "the chat is completed"
        await post_update(product, channel["id"], telegram_update(3, "Me again"))
        reopened = await stream.wait_for("chat.offered", chat_id=Not(chat_id))
        assert reopened["data"]["contact_id"] == accepted["contact_id"]

    # Another agent, not in the queue, sees nothing of it and cannot touch it.
    boris_name = f"boris-{chat_id[:8]}"
    await admin.http.post(
        "/api/admin/agents",
        json={"username": boris_name, "password": "boris-password", "display_name": "Boris"},
    )
    boris = await Console.login(product, boris_name, "boris-password")
    assert (await boris.http.get(f"/api/chats/{chat_id}")).status_code == 404
    assert (await boris.http.get(f"/api/chats/{chat_id}/messages")).status_code == 404
    reply = await boris.http.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"})
    assert reply.status_code == 404
    assert (await boris.http.post(f"/api/chats/{chat_id}/accept")).status_code == 404
    assert (await boris.http.get("/api/chats", params={"view": "active"})).json() == []
    assert (await boris.http.post("/api/admin/agents", json={})).status_code == 403

    # Secrets never reach the logs.
    log = product.log()
    for secret in (token, SECRET, ADMIN_PASSWORD, anna.token, admin.token):
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
    agents = (await admin.http.get("/api/admin/agents")).json()
    assert {"admin", anna.me["username"]} <= {a["username"] for a in agents}

    again = await Console.login(product, anna.me["username"], AGENT_PASSWORD)
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
    await eventually(lambda: anna.list_chats("new"), bool)
    await asyncio.sleep(1)  # time enough for anything the refused updates might have started
    new = (await anna.http.get("/api/chats", params={"view": "new"})).json()
    assert len(new) == 1
    messages = (await anna.http.get(f"/api/chats/{new[0]['id']}/messages")).json()
    assert [m["text"] for m in messages] == ["real one"]
    await admin.close()
    await anna.close()
