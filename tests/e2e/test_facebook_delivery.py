"""Flow 4's failure cases on Messenger: what the agent sees when the Send API refuses or stumbles,
and the channel flag a dead page token raises."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.desk import Stream
from tests.support.fake_facebook import (
    OUTSIDE_WINDOW,
    RATE_LIMITED,
    SERVER_ERROR,
    TOKEN_EXPIRED,
    UNAVAILABLE,
    FakeFacebook,
)
from tests.support.messenger import (
    FacebookPage,
    new_psid,
    now_ms,
    post_webhook,
    setup_facebook_desk,
    text_event,
    webhook,
)
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e

DAY_MS = 24 * 3600 * 1000


async def accepted_chat(
    product: Product,
    stream: Stream,
    anna: Console,
    channel: dict[str, Any],
    page: FacebookPage,
    *,
    customer_wrote_ms: int | None = None,
) -> tuple[str, str]:
    """A chat from a new customer (who wrote at `customer_wrote_ms`), accepted by Anna."""
    await anna.http.put("/api/me/status", json={"status": "active"})
    psid = new_psid()
    body = webhook(page, text_event(page, psid, "help", at_ms=customer_wrote_ms))
    assert (await post_webhook(product, channel["id"], body, page.app_secret)).is_success
    chat_id: str = (await stream.wait_for("chat.offered"))["data"]["chat_id"]
    await anna.http.post(f"/api/chats/{chat_id}/accept")
    return chat_id, psid


async def reply(stream: Stream, anna: Console, chat_id: str, text: str) -> dict[str, Any]:
    """Post a reply; the message as its final delivery status shows it."""
    sent = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": text})).json()
    assert sent["delivery_status"] == "pending"
    event = await stream.wait_for("chat.message_status_changed", message__id=sent["id"], timeout=30)
    message: dict[str, Any] = event["data"]["message"]
    return message


async def channel_status(admin: Console, channel_id: str) -> str:
    channels = (await admin.http.get("/api/admin/channels")).json()
    [status] = [c["status"] for c in channels if c["id"] == channel_id]
    return str(status)


async def test_outside_the_window_without_the_tag_fails_with_the_reason(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(product, stream, anna, channel, page)
        fake_facebook.errors["messages"] = [OUTSIDE_WINDOW]
        message = await reply(stream, anna, chat_id, "Sorry for the wait")
    assert message["delivery_status"] == "failed"
    assert "24 hours" in message["delivery_error"]
    assert "HUMAN_AGENT" in message["delivery_error"]
    assert len(fake_facebook.sent()) == 1  # no tagged retry for a channel without the tag
    [stored] = [m for m in await anna.messages(chat_id) if m["direction"] == "out"]
    assert (stored["delivery_status"], stored["delivery_error"]) == (
        "failed",
        message["delivery_error"],
    )
    await admin.close()
    await anna.close()


async def test_outside_the_window_goes_again_tagged_human_agent_within_seven_days(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(
        product, fake_facebook, human_agent_tag=True
    )
    assert channel["human_agent_tag"] is True
    async with Stream(anna.ws_url()) as stream:
        chat_id, psid = await accepted_chat(
            product, stream, anna, channel, page, customer_wrote_ms=now_ms() - 2 * DAY_MS
        )
        fake_facebook.errors["messages"] = [OUTSIDE_WINDOW]
        message = await reply(stream, anna, chat_id, "Back to your question")
    assert message["delivery_status"] == "sent", message
    first, tagged = fake_facebook.sent()
    assert first.body is not None and first.body["messaging_type"] == "RESPONSE"
    assert tagged.body == {
        "recipient": {"id": psid},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
        "message": {"text": "Back to your question"},
    }
    await admin.close()
    await anna.close()


async def test_more_than_seven_days_after_the_customer_wrote_nothing_goes(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(
        product, fake_facebook, human_agent_tag=True
    )
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(
            product, stream, anna, channel, page, customer_wrote_ms=now_ms() - 8 * DAY_MS
        )
        fake_facebook.errors["messages"] = [OUTSIDE_WINDOW]
        message = await reply(stream, anna, chat_id, "Hello again")
    assert message["delivery_status"] == "failed"
    assert "more than 7 days ago" in message["delivery_error"]
    assert len(fake_facebook.sent()) == 1
    await admin.close()
    await anna.close()


async def test_a_customer_who_cannot_receive_messages(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(product, stream, anna, channel, page)
        fake_facebook.errors["messages"] = [UNAVAILABLE]
        message = await reply(stream, anna, chat_id, "Are you there?")
    assert message["delivery_status"] == "failed"
    assert "can't receive messages" in message["delivery_error"]
    assert len(fake_facebook.sent()) == 1  # retrying would not help
    await admin.close()
    await anna.close()


async def test_an_expired_page_token_fails_the_reply_and_flags_the_channel(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(product, stream, anna, channel, page)
        fake_facebook.errors["messages"] = [TOKEN_EXPIRED]
        message = await reply(stream, anna, chat_id, "One moment")
        assert message["delivery_status"] == "failed"
        assert "access token is no longer valid" in message["delivery_error"]
        assert len(fake_facebook.sent()) == 1
        assert (await channel_status(admin, channel["id"])) == "token_invalid"

        # The admin pastes a new token: Meta must take it, and the flag clears.
        patch = f"/api/admin/channels/{channel['id']}"
        refused = await admin.http.patch(patch, json={"page_token": "EAAB-made-up"})
        assert refused.status_code == 422 and "made-up" not in refused.text
        wrong_kind = await admin.http.patch(patch, json={"token": "123:abc"})
        assert wrong_kind.status_code == 422 and "no token" in wrong_kind.json()["detail"]
        assert (await channel_status(admin, channel["id"])) == "token_invalid"
        new_token = "EAAB-renewed-" + page.token[-8:]
        fake_facebook.add_page(new_token, page.id, "Support page", page.app_secret)
        renewed = await admin.http.patch(patch, json={"page_token": new_token})
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["status"] == "ok" and new_token not in renewed.text

        message = await reply(stream, anna, chat_id, "Sorry, here I am")
        assert message["delivery_status"] == "sent"
    assert fake_facebook.sent()[-1].params["access_token"] == new_token
    assert (await channel_status(admin, channel["id"])) == "ok"
    assert new_token not in product.log()
    await admin.close()
    await anna.close()


async def test_outages_and_rate_limits_are_retried_then_sent_and_long_text_goes_in_parts(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(product, stream, anna, channel, page)
        fake_facebook.errors["messages"] = [SERVER_ERROR, RATE_LIMITED]
        long_text = " ".join(f"line{i:04d}" for i in range(300))  # 2699 characters
        message = await reply(stream, anna, chat_id, long_text)
    assert message["delivery_status"] == "sent"
    texts = [c.body["message"]["text"] for c in fake_facebook.sent() if c.body]
    first_part, second_part = texts[-2:]
    assert texts == [first_part] * 3 + [second_part]  # two refusals, then each part once
    assert len(first_part) <= 2000 and f"{first_part} {second_part}" == long_text
    await admin.close()
    await anna.close()


async def test_every_retry_failing_ends_as_failed_not_pending(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    async with Stream(anna.ws_url()) as stream:
        chat_id, _ = await accepted_chat(product, stream, anna, channel, page)
        fake_facebook.errors["messages"] = [SERVER_ERROR] * 5
        message = await reply(stream, anna, chat_id, "x")
    assert message["delivery_status"] == "failed"
    assert message["delivery_error"] == "Facebook could not be reached; gave up after 5 attempts."
    await admin.close()
    await anna.close()
