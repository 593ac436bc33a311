"""Telegram channels as an administrator runs them: the token checked with getMe, the webhook
registered with Telegram (the shared product runs with CHATDESK_PUBLIC_BASE_URL), deactivation
and deletion."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.support.desk import (
    SECRET,
    agent_and_queue,
    eventually,
    new_bot_token,
    post_update,
    setup_desk,
    telegram_update,
)
from tests.support.fake_telegram import UNAUTHORIZED, FakeTelegram, serve
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e


def telegram_channel(queue_id: str, fake: FakeTelegram, token: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "telegram",
        "name": f"Bot {secrets.token_hex(4)}",
        "queue_id": queue_id,
        "token": token,
        "secret": SECRET,
        "api_base": fake.url,
        **extra,
    }


async def channel_named(admin: Console, name: str) -> list[dict[str, Any]]:
    channels = (await admin.http.get("/api/admin/channels")).json()
    return [c for c in channels if c["name"] == name]


async def listed(admin: Console, channel_id: str) -> list[dict[str, Any]]:
    """The channel as `GET /api/admin/channels` lists it (none if it is not there)."""
    channels = (await admin.http.get("/api/admin/channels")).json()
    return [c for c in channels if c["id"] == channel_id]


async def test_a_token_telegram_refuses_creates_nothing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, _, queue = await agent_and_queue(product)
    token = new_bot_token()
    fake_telegram.refused_tokens.add(token)
    body = telegram_channel(queue["id"], fake_telegram, token)

    refused = await admin.http.post("/api/admin/channels", json=body)

    assert refused.status_code == 422, refused.text
    assert "Telegram refused the bot token" in refused.json()["detail"]
    assert token not in refused.text and SECRET not in refused.text
    assert [c.method for c in fake_telegram.calls] == ["getMe"]
    assert await channel_named(admin, body["name"]) == []
    await admin.close()


async def test_telegram_out_of_reach_is_a_bad_gateway(product: Product) -> None:
    admin, _, queue = await agent_and_queue(product)
    gone = FakeTelegram()
    server, task = await serve(gone)
    server.should_exit = True
    await task  # a Bot API server that was there and is no more
    body = telegram_channel(queue["id"], gone, new_bot_token())

    response = await admin.http.post("/api/admin/channels", json=body)

    assert response.status_code == 502, response.text
    assert "Telegram could not be reached" in response.json()["detail"]
    assert await channel_named(admin, body["name"]) == []
    await admin.close()


async def test_new_channel_registers_its_webhook_with_its_secret(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, _, channel = await setup_desk(product, fake_telegram, token=token)

    [call] = fake_telegram.sent("setWebhook")
    assert call.token == token
    assert call.params["url"] == f"{product.ingest}/webhooks/telegram/{channel['id']}"
    assert call.params["secret_token"] == SECRET
    assert json.loads(call.params["allowed_updates"]) == ["message", "edited_message"]
    assert channel["status"] == "ok" and channel["status_reason"] is None
    assert channel["bot_id"] == token.split(":")[0]
    assert channel["bot_username"] == f"fake_{channel['bot_id']}_bot"
    assert channel["page_id"] is None

    # One channel per bot: a second one would take the first one's webhook.
    _, _, queue = await agent_and_queue(product)
    again = await admin.http.post(
        "/api/admin/channels", json=telegram_channel(queue["id"], fake_telegram, token)
    )
    assert again.status_code == 409 and channel["id"] in again.json()["detail"]
    await admin.close()


async def test_a_webhook_telegram_refuses_shows_as_failing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    refusal = (400, "Bad Request: bad webhook: HTTPS url must be provided for webhook")
    # Refused when the channel is created, and again when its link checks it just after.
    fake_telegram.errors["setWebhook"] = [refusal, refusal]
    admin, _, channel = await setup_desk(product, fake_telegram)

    assert channel["status"] == "webhook_failing"
    assert channel["status_reason"] == (
        "Telegram did not take the webhook: Bad Request: bad webhook: HTTPS url must be provided "
        "for webhook"
    )
    await fake_telegram.wait_sent(2, "setWebhook")
    [shown] = await listed(admin, channel["id"])
    assert shown["status"] == "webhook_failing"

    # Once the cause is fixed, `active: true` registers it again.
    retried = await admin.http.patch(f"/api/admin/channels/{channel['id']}", json={"active": True})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "ok" and retried.json()["status_reason"] is None
    assert len(fake_telegram.sent("setWebhook")) == 3
    await admin.close()


async def test_a_new_token_must_be_the_same_bots(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, _, channel = await setup_desk(product, fake_telegram, token=token)
    path = f"/api/admin/channels/{channel['id']}"

    other_bot = await admin.http.patch(path, json={"token": new_bot_token()})
    assert other_bot.status_code == 422 and "not of this channel's bot" in other_bot.text
    refused_token = token.split(":")[0] + ":revoked-" + secrets.token_hex(4)
    fake_telegram.refused_tokens.add(refused_token)
    refused = await admin.http.patch(path, json={"token": refused_token})
    assert refused.status_code == 422 and refused_token not in refused.text

    renewed_token = token.split(":")[0] + ":renewed-" + secrets.token_hex(4)
    renewed = await admin.http.patch(path, json={"token": renewed_token})
    assert renewed.status_code == 200, renewed.text
    assert renewed_token not in renewed.text
    assert fake_telegram.sent("setWebhook")[-1].token == renewed_token  # the webhook follows
    await admin.close()


async def test_a_deactivated_channel_takes_nothing_and_sends_nothing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    assert (await post_update(product, channel["id"], telegram_update(1, "hi"))).status_code == 200
    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    await anna.http.post(f"/api/chats/{chat['id']}/accept")
    path = f"/api/admin/channels/{channel['id']}"

    off = await admin.http.patch(path, json={"active": False})
    assert off.status_code == 200 and off.json()["active"] is False

    refused = await post_update(product, channel["id"], telegram_update(2, "anyone?"))
    assert refused.status_code == 410 and refused.json()["detail"] == "the channel is deactivated"
    sent_before = len(fake_telegram.sent())
    reply = (
        await anna.http.post(f"/api/chats/{chat['id']}/messages", json={"text": "still here"})
    ).json()
    messages = await eventually(
        lambda: anna.messages(chat["id"]),
        lambda ms: any(m["id"] == reply["id"] and m["delivery_status"] == "failed" for m in ms),
    )
    assert [m["text"] for m in messages] == ["hi", "still here"]
    assert messages[-1]["delivery_error"] == "The channel of this chat is no longer active."
    assert len(fake_telegram.sent()) == sent_before

    # A channel with chats is deactivated, never deleted.
    kept = await admin.http.delete(path)
    assert kept.status_code == 409 and "deactivate it instead" in kept.json()["detail"]
    assert await listed(admin, channel["id"])

    on = await admin.http.patch(path, json={"active": True})
    assert on.status_code == 200 and on.json()["active"] is True
    assert (
        await post_update(product, channel["id"], telegram_update(3, "back"))
    ).status_code == 200
    await admin.close()
    await anna.close()


async def test_a_channel_without_chats_can_be_deleted(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, _, channel = await setup_desk(product, fake_telegram, token=token)
    path = f"/api/admin/channels/{channel['id']}"

    deleted = await admin.http.delete(path)

    assert deleted.status_code == 204, deleted.text
    assert fake_telegram.sent("deleteWebhook")[-1].token == token  # Telegram stops posting
    assert (await admin.http.delete(path)).status_code == 404
    gone = await post_update(product, channel["id"], telegram_update(1, "hello?"))
    assert gone.status_code == 404
    # The bot is free for a new channel.
    _, _, queue = await agent_and_queue(product)
    again = await admin.http.post(
        "/api/admin/channels", json=telegram_channel(queue["id"], fake_telegram, token)
    )
    assert again.status_code == 201, again.text
    await admin.close()


async def test_webhook_delivery_trouble_is_reported(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    """The link asks getWebhookInfo when it takes a channel: a recent delivery error with
    updates waiting means Telegram cannot reach the webhook."""
    token = new_bot_token()
    fake_telegram.push(token, telegram_update(1, "waiting"))
    fake_telegram.bot(token).last_error = (int(time.time()), "Connection timed out")

    admin, _, channel = await setup_desk(product, fake_telegram, token=token)

    [shown] = await eventually(
        lambda: listed(admin, channel["id"]),
        lambda cs: bool(cs) and cs[0]["status"] == "webhook_failing",
    )
    assert shown["status_reason"] == (
        "Telegram cannot deliver updates to the webhook: Connection timed out"
    )
    assert fake_telegram.sent("getWebhookInfo")[-1].token == token
    await admin.close()


async def test_unauthorized_replies_flag_the_channel(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    await post_update(product, channel["id"], telegram_update(1, "hi"))
    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    await anna.http.post(f"/api/chats/{chat['id']}/accept")
    fake_telegram.errors["sendMessage"] = [UNAUTHORIZED]

    reply = (await anna.http.post(f"/api/chats/{chat['id']}/messages", json={"text": "x"})).json()

    messages = await eventually(
        lambda: anna.messages(chat["id"]),
        lambda ms: any(m["id"] == reply["id"] and m["delivery_status"] == "failed" for m in ms),
    )
    assert "bot token" in messages[-1]["delivery_error"]
    [shown] = await listed(admin, channel["id"])
    assert shown["status"] == "token_invalid" and "401" in shown["status_reason"]
    await admin.close()
    await anna.close()
