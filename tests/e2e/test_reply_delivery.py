"""Flow 4's failure cases: what the agent sees when Telegram refuses or stumbles."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.desk import Stream, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import BLOCKED, DEACTIVATED, FakeTelegram
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


@pytest.mark.parametrize("refusal", [BLOCKED, DEACTIVATED], ids=["blocked", "deactivated"])
async def test_blocked_bot_shows_failed_with_reason_and_the_contact_unreachable(
    product: Product, fake_telegram: FakeTelegram, refusal: tuple[int, str]
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, fake_telegram, stream, anna, channel)
        fake_telegram.errors["sendMessage"] = [refusal]
        sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"})).json()
        assert sent["delivery_status"] == "pending"
        event = await stream.wait_for("chat.message_status_changed", message__id=sent["id"])
    message = event["data"]["message"]
    assert message["delivery_status"] == "failed"
    assert message["delivery_error"] == "The customer blocked the bot or deleted their account."
    stored = (await anna.http.get(f"/api/chats/{chat_id}/messages")).json()
    assert [
        (m["delivery_status"], m["delivery_error"]) for m in stored if m["direction"] == "out"
    ] == [("failed", message["delivery_error"])]

    # The contact shows it: no use replying on this channel until the customer writes again.
    contact_id = (await anna.http.get(f"/api/chats/{chat_id}")).json()["contact_id"]
    contact = await eventually(
        lambda: _contact(anna, contact_id), lambda c: c["identities"][0]["unreachable"]
    )
    [identity] = contact["identities"]
    assert identity["channel_id"] == channel["id"] and identity["external_user_id"] == "777"
    assert identity["unreachable_reason"] == message["delivery_error"]
    assert identity["unreachable_since"]

    await post_update(product, channel["id"], telegram_update(2, "unblocked you", user_id=777))
    await eventually(
        lambda: _contact(anna, contact_id), lambda c: not c["identities"][0]["unreachable"]
    )
    await admin.close()
    await anna.close()


async def _contact(console: Console, contact_id: str) -> dict[str, Any]:
    contact: dict[str, Any] = (await console.http.get(f"/api/contacts/{contact_id}")).json()
    return contact


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
    # The 429 said "retry_after": 1, and it was waited out.
    assert attempts[2].at - attempts[1].at >= 0.95
    await admin.close()
    await anna.close()


async def test_a_long_reply_goes_in_parts_in_order(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    paragraphs = [f"Paragraph {n}: " + "lorem ipsum " * 300 for n in range(3)]  # ~3.6k each
    text = "\n".join(paragraphs)
    assert len(text) > 2 * 4096
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, fake_telegram, stream, anna, channel)
        before = len(fake_telegram.sent())
        sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": text})).json()
        event = await stream.wait_for("chat.message_status_changed", message__id=sent["id"])
    assert event["data"]["message"]["delivery_status"] == "sent"
    parts = [c.params["text"] for c in fake_telegram.sent()[before:]]
    assert all(len(p) <= 4096 for p in parts) and len(parts) == 3
    assert parts == paragraphs  # cut at the line breaks
    [stored] = [m for m in await anna.messages(chat_id) if m["direction"] == "out"]
    assert stored["text"] == text
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
