"""A Telegram message's life in the console: edits change it (and the console hears of it live),
messages show in Telegram's order whatever order they arrive in, an album's items follow each
other, group chats stay out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.desk import (
    Stream,
    edited_update,
    eventually,
    post_update,
    setup_desk,
    telegram_update,
)
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e

PHOTO = [
    {"file_id": "AgACAgIAAxkBAAIC", "file_unique_id": "AQADc1", "file_size": 84211,
     "width": 800, "height": 600},
]  # fmt: skip


async def accepted_chat(
    product: Product,
    stream: Stream,
    anna: Console,
    channel: dict[str, Any],
    user_id: int,
    date: int | None = None,
) -> str:
    await anna.http.put("/api/me/status", json={"status": "active"})
    first = telegram_update(1, "Helo, my order is late", user_id=user_id, date=date)
    assert (await post_update(product, channel["id"], first)).status_code == 200
    chat_id: str = (await stream.wait_for("chat.offered"))["data"]["chat_id"]
    await anna.http.post(f"/api/chats/{chat_id}/accept")
    return chat_id


async def test_an_edit_changes_the_message_live(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, stream, anna, channel, user_id=6101)

        edit = edited_update(2, 1, "Hello, my order is late", user_id=6101)
        assert (await post_update(product, channel["id"], edit)).status_code == 200
        event = await stream.wait_for(
            "chat.message_edited", message__text="Hello, my order is late"
        )
        assert (await post_update(product, channel["id"], edit)).status_code == 200  # repeated
        await asyncio.sleep(1)  # time for a repeat to show, if there were one

    assert len([e for e in stream.events if e["type"] == "chat.message_edited"]) == 1
    assert event["data"]["chat_id"] == chat_id
    [message] = await anna.messages(chat_id)
    assert message["text"] == "Hello, my order is late"
    assert message["edited_at"] and message["id"] == event["data"]["message"]["id"]
    await admin.close()
    await anna.close()


async def test_an_edit_that_comes_before_its_message_is_applied_when_it_arrives(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, stream, anna, channel, user_id=6102)

        edit = edited_update(11, 10, "order 43, not 42", user_id=6102)
        assert (await post_update(product, channel["id"], edit)).status_code == 200
        late = telegram_update(10, "order 42", user_id=6102)
        assert (await post_update(product, channel["id"], late)).status_code == 200
        await stream.wait_for("chat.message_edited", message__text="order 43, not 42")

    messages = await anna.messages(chat_id)
    assert [m["text"] for m in messages] == ["Helo, my order is late", "order 43, not 42"]
    await admin.close()
    await anna.close()


async def test_messages_show_in_telegrams_order_and_albums_together(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    user = 6103
    now = int(time.time())  # Telegram's dates grow with its message numbers
    async with Stream(anna.ws_url()) as stream:
        chat_id = await accepted_chat(product, stream, anna, channel, user_id=user, date=now - 5)
        # Message 3 overtakes message 2 (a webhook retry, a slower replica).
        for update in (
            telegram_update(3, "and it is broken", user_id=user, date=now - 3),
            telegram_update(2, "it came today", user_id=user, date=now - 3),
        ):
            assert (await post_update(product, channel["id"], update)).status_code == 200
        await eventually(lambda: anna.messages(chat_id), lambda ms: len(ms) == 3)
        reply = await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "Photos?"})
        assert reply.status_code == 201
        # An album of three photos: one update per item, the second one first.
        album = [album_item(4 + n, user, now - 1, caption="front, back, side" if n == 0 else None)
                 for n in range(3)]  # fmt: skip
        for update in (album[1], album[0], album[2]):
            assert (await post_update(product, channel["id"], update)).status_code == 200
        await stream.wait_for("chat.message_received", message__text=None)

    messages = await eventually(lambda: anna.messages(chat_id), lambda ms: len(ms) == 7)
    assert [(m["direction"], m["text"]) for m in messages] == [
        ("in", "Helo, my order is late"),
        ("in", "it came today"),
        ("in", "and it is broken"),
        ("out", "Photos?"),
        ("in", "front, back, side"),
        ("in", None),
        ("in", None),
    ]
    assert [len(m["attachments"]) for m in messages[-3:]] == [1, 1, 1]
    await admin.close()
    await anna.close()


async def test_group_chats_are_not_customer_chats(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    group = telegram_update(1, "hi all", user_id=6104)
    group["message"]["chat"] = {"id": -1001234567890, "title": "Shop fans", "type": "supergroup"}

    response = await post_update(product, channel["id"], group)

    assert response.status_code == 200  # acknowledged, or Telegram would send it again
    await asyncio.sleep(1)
    assert await anna.list_chats("new") == []
    assert "telegram non-private chat ignored" in product.log()
    await admin.close()
    await anna.close()


async def test_an_unsupported_message_still_shows(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    dice = telegram_update(1, "", user_id=6105)
    del dice["message"]["text"]
    dice["message"]["dice"] = {"emoji": "🎲", "value": 4}

    assert (await post_update(product, channel["id"], dice)).status_code == 200

    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    [message] = await anna.messages(chat["id"])
    assert message["text"] == "[unsupported message]"
    await admin.close()
    await anna.close()


def album_item(message_id: int, user_id: int, date: int, caption: str | None) -> dict[str, Any]:
    update = telegram_update(message_id, "", user_id=user_id, date=date)
    message = update["message"]
    del message["text"]
    message.update(media_group_id="13713985843785429", photo=PHOTO)
    if caption is not None:
        message["caption"] = caption
    return update
