"""Flow 4's failure cases: what the agent sees when Telegram refuses or stumbles."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.desk import Stream, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e


async def accepted_chat(
    product: Product, fake: FakeTelegram, stream: Stream, anna: Console, channel: dict[str, Any]
) -> str:
    await anna.http.put("/api/me/status", json={"status": "active"})
    await post_update(product, channel["id"], telegram_update(1, "help", user_id=777))
    chat_id: str = (await stream.wait_for("chat.offered"))["data"]["chat_id"]
    await anna.http.post(f"/api/chats/{chat_id}/accept")
    return chat_id


async def test_blocked_bot_shows_failed_with_reason(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, fake_telegram, stream, anna, channel)
        fake_telegram.errors["sendMessage"] = [(403, "Forbidden: bot was blocked by the user")]
        sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"})).json()
        assert sent["delivery_status"] == "pending"
        event = await stream.wait_for("chat.message_status_changed", message__id=sent["id"])
    message = event["data"]["message"]
    assert message["delivery_status"] == "failed"
    assert "blocked the bot" in message["delivery_error"]
    stored = (await anna.http.get(f"/api/chats/{chat_id}/messages")).json()
    assert [
        (m["delivery_status"], m["delivery_error"]) for m in stored if m["direction"] == "out"
    ] == [("failed", message["delivery_error"])]
    await admin.close()
    await anna.close()


async def test_outages_and_rate_limits_are_retried_then_sent(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, fake_telegram, stream, anna, channel)
        before = len(fake_telegram.sent())
        fake_telegram.errors["sendMessage"] = [
            (500, "Internal Server Error"),
            (429, "Too Many Requests: retry after 1"),
        ]
        sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "ok"})).json()
        event = await stream.wait_for(
            "chat.message_status_changed", message__id=sent["id"], timeout=30
        )
    assert event["data"]["message"]["delivery_status"] == "sent"
    attempts = fake_telegram.sent()[before:]
    assert [c.params["text"] for c in attempts] == ["ok", "ok", "ok"]
    await admin.close()
    await anna.close()


async def test_every_retry_failing_ends_as_failed_not_pending(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, fake_telegram, stream, anna, channel)
        fake_telegram.errors["sendMessage"] = [(502, "Bad Gateway")] * 5
        sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "x"})).json()
        event = await stream.wait_for(
            "chat.message_status_changed", message__id=sent["id"], timeout=30
        )
    message = event["data"]["message"]
    assert message["delivery_status"] == "failed"
    assert message["delivery_error"] == "Telegram could not be reached; gave up after 5 attempts."
    await admin.close()
    await anna.close()
