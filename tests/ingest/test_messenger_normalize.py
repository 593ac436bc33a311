"""Messenger webhooks, as Meta posts them (fixtures/messenger), into what ingest acts on:
customer messages that become `InboundMessage`s, and receipts for our own messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from libs.common.events import Attachment, Sender
from services.ingest.meta import messenger
from services.ingest.meta.items import CustomerMessage, Item, Receipt
from services.ingest.meta.profiles import fallback_sender
from services.ingest.meta.webhook import PARSERS, Envelope
from services.ingest.models import Channel

FIXTURES = Path(__file__).parent / "fixtures" / "messenger"
PAGE = "104512345678901"
PSID = "7012345678901234"


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


def parse(body: dict[str, Any]) -> list[Item]:
    envelope = Envelope.model_validate(body)
    return PARSERS[envelope.object](envelope.entry)


def only_message(name: str) -> CustomerMessage:
    [item] = parse(fixture(name))
    assert isinstance(item, CustomerMessage)
    return item


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@pytest.fixture
def channel() -> Channel:
    return Channel(
        id="3f0a2b1c-9d8e-4f7a-8b6c-5d4e3f2a1b0c",
        kind="facebook",
        name="Support page",
        queue_id="5a1d7c1e-3f4b-4a77-8f0e-2b9d2c6a9e01",
        api_base="https://graph.facebook.com/v25.0",
        external_id=PAGE,
        token="EAAGm0PX4ZCpsBA-page-token",
        secret="0123456789abcdef0123456789abcdef",
        verify_token="verify-me",
        human_agent_tag=False,
        status="ok",
        active=True,
    )


def test_text_message_becomes_an_inbound_message(channel: Channel) -> None:
    item = only_message("text.json")
    assert (item.account_id, item.user_id) == (PAGE, PSID)
    assert item.sent_at == ms(1718012345123)

    sender = Sender(first_name="Ivan", last_name="Petrov")
    message = messenger.inbound_message(item, channel, sender)

    assert message.platform == "facebook"
    assert message.channel_id == channel.id and message.queue_id == channel.queue_id
    assert message.external_user_id == message.external_chat_id == PSID
    assert message.external_message_id == item.message_id
    assert message.text == "Hello, my order #123 has not arrived"
    assert message.attachments == []
    assert message.sender.display_name == "Ivan Petrov"
    assert message.sent_at == datetime(2024, 6, 10, 9, 39, 5, 123000, tzinfo=UTC)
    assert messenger.dedup_key(item) == f"facebook:{PAGE}:{item.message_id}"


def test_channel_secrets_stay_out_of_the_event(channel: Channel) -> None:
    event = messenger.inbound_message(
        only_message("text.json"), channel, fallback_sender(PSID)
    ).model_dump_json()

    for secret in (channel.token, channel.secret, channel.verify_token):
        assert secret is not None and secret not in event


def test_a_batch_keeps_every_entry_and_event_in_order() -> None:
    items = parse(fixture("batch.json"))

    assert [(type(i).__name__, i.user_id) for i in items] == [
        ("CustomerMessage", PSID),
        ("CustomerMessage", PSID),
        ("CustomerMessage", "6998877665544332"),
        ("Receipt", "6998877665544332"),
    ]
    texts = [i.text for i in items if isinstance(i, CustomerMessage)]
    assert texts == ["one", "two", "three, from someone else"]
    assert len({i.message_id for i in items if isinstance(i, CustomerMessage)}) == 3


def test_media_attachments_in_chatdesk_words() -> None:
    item = only_message("attachments.json")

    assert item.text is None
    assert [a.kind for a in item.attachments] == ["photo", "video", "audio", "document"]
    assert item.attachments[0].model_copy(update={"id": "-"}) == Attachment(
        id="-",
        kind="photo",
        platform_file_id="https://scontent.xx.fbcdn.net/v/t1.15752-9/photo.jpg?_nc_cat=1&oh=abc",
    )


def test_shared_links_and_unsupported_shares_become_text() -> None:
    link, old_link, unsupported = parse(fixture("fallback.json"))

    assert isinstance(link, CustomerMessage)
    assert link.text == "look at this\nItem 42 https://example.com/item/42"
    assert link.attachments == []
    assert isinstance(old_link, CustomerMessage)
    assert old_link.text == "Facebook HQ https://www.facebook.com/l.php?u=https%3A%2F%2Fexample.com"
    assert isinstance(unsupported, CustomerMessage)
    assert unsupported.text == "[unsupported message]"


def test_a_sticker_is_one_sticker_in_old_and_new_webhooks() -> None:
    new, old = parse(fixture("sticker.json"))

    assert isinstance(new, CustomerMessage) and isinstance(old, CustomerMessage)
    assert [a.kind for a in new.attachments] == ["sticker"]
    assert [a.kind for a in old.attachments] == ["sticker"]
    assert new.text is None


def test_quick_reply_reads_as_the_button_text() -> None:
    item = only_message("quick_reply.json")

    assert item.text == "Track my order"
    assert item.message_id == "mid.1457764197618:41d102a3e1ae206a38"


def test_postbacks_read_as_the_button_title_and_old_ones_get_a_key() -> None:
    new, old = parse(fixture("postback.json"))

    assert isinstance(new, CustomerMessage) and isinstance(old, CustomerMessage)
    assert (new.text, new.message_id) == ("Get Started", "m_postback-get-started")
    # Postbacks from before webhook v6 have no mid: sender and time name them instead.
    assert (old.text, old.message_id) == ("Talk to a human", f"postback:{PSID}:1527459825000")
    assert old.sent_at == ms(1527459825000)


def test_echoes_of_our_own_messages_are_ignored() -> None:
    assert parse(fixture("echo.json")) == []


def test_receipts_carry_watermark_and_mids() -> None:
    delivered, delivered_without_mids, read = parse(fixture("receipts.json"))

    assert delivered == Receipt(
        PAGE, PSID, "delivered", ms(1458668856253), ("mid.1458668856218:ed81099e15d3f4f233",)
    )
    assert delivered_without_mids == Receipt(PAGE, PSID, "delivered", ms(1458668856300))
    assert read == Receipt(PAGE, PSID, "read", ms(1458668856253))


def test_non_ascii_text_survives() -> None:
    item = only_message("unicode.json")

    assert item.text == "Grüße aus München — заказ № 5 🙏 https://example.com/a"


def test_long_mids_are_kept_by_digest(channel: Channel) -> None:
    body = fixture("text.json")
    long_mid = "m_" + "x" * 150
    body["entry"][0]["messaging"][0]["message"]["mid"] = long_mid
    [item] = parse(body)
    assert isinstance(item, CustomerMessage)

    message = messenger.inbound_message(item, channel, fallback_sender(PSID))

    assert message.external_message_id.startswith("sha256:")
    assert len(message.external_message_id) <= 100
    assert messenger.dedup_key(item) == f"facebook:{PAGE}:{message.external_message_id}"


def test_other_events_are_skipped() -> None:
    body = fixture("text.json")
    body["entry"][0]["messaging"][0] = {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE},
        "timestamp": 1718012345123,
        "reaction": {"reaction": "love", "emoji": "❤", "action": "react", "mid": "m_x"},
    }
    assert parse(body) == []


def test_fallback_sender_names_the_customer_by_the_end_of_the_psid() -> None:
    assert fallback_sender(PSID).display_name == "Facebook user 1234"


@pytest.mark.parametrize(
    "body",
    [
        {"entry": []},  # no object
        {"object": "page", "entry": {"id": "1"}},  # entry not a list
        {"object": "page", "entry": [{"time": 1, "messaging": []}]},  # entry without a page id
        {"object": "page", "entry": [{"id": "1", "time": 1, "messaging": [{"sender": {}}]}]},
        {
            "object": "page",
            "entry": [
                {
                    "id": "1",
                    "time": 1,
                    "messaging": [
                        {"sender": {"id": "2"}, "recipient": {"id": "1"}, "message": {"text": "x"}}
                    ],
                }
            ],
        },  # a message without a mid
    ],
)
def test_malformed_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(body)
