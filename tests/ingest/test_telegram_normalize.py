"""`normalize`: a Telegram Bot API update, as Telegram posts it to the webhook, into the
`InboundMessage` the rest of chatdesk sees (or None when it is no customer message)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram.types import Update

from libs.common.events import Attachment, InboundMessage, Sender
from services.ingest.models import Channel
from services.ingest.telegram import normalize

SENT = 1718012345  # 2024-06-10 09:39:05 UTC, as Telegram sends `date`
SENT_AT = datetime(2024, 6, 10, 9, 39, 5, tzinfo=UTC)
USER_ID = 5551234567

IVAN = {
    "id": USER_ID,
    "is_bot": False,
    "first_name": "Ivan",
    "last_name": "Petrov",
    "username": "ivanp",
    "language_code": "ru",
}
PRIVATE_CHAT = {
    "id": USER_ID,
    "first_name": "Ivan",
    "last_name": "Petrov",
    "username": "ivanp",
    "type": "private",
}


def update(content: dict[str, Any], **message: Any) -> Update:
    """A private-chat message update from Ivan carrying `content` (text, photo, ...)."""
    payload = {
        "update_id": 815307001,
        "message": {
            "message_id": 1042,
            "from": IVAN,
            "chat": PRIVATE_CHAT,
            "date": SENT,
            **message,
            **content,
        },
    }
    return Update.model_validate(payload)


def normalized(content: dict[str, Any], channel: Channel, **message: Any) -> InboundMessage:
    result = normalize(update(content, **message), channel)
    assert result is not None
    return result


def files(message: InboundMessage) -> list[Attachment]:
    """The message's files, their ids (random, given at normalization) blanked."""
    return [a.model_copy(update={"id": "-"}) for a in message.attachments]


def test_text_message(channel: Channel) -> None:
    message = normalized({"text": "Hello, my order #123 has not arrived"}, channel)

    assert message.type == "inbound.received"
    assert message.channel_id == channel.id
    assert message.queue_id == channel.queue_id
    assert message.platform == "telegram"
    assert message.external_user_id == str(USER_ID)
    assert message.external_chat_id == str(USER_ID)
    assert message.external_message_id == "1042"
    assert message.sender == Sender(
        first_name="Ivan", last_name="Petrov", username="ivanp", language_code="ru"
    )
    assert message.sender.display_name == "Ivan Petrov"
    assert message.text == "Hello, my order #123 has not arrived"
    assert message.attachments == []
    assert message.sent_at == SENT_AT
    assert message.sent_at.utcoffset() == timedelta(0)
    assert message.received_at.utcoffset() == timedelta(0)


def test_channel_secrets_stay_out_of_the_event(channel: Channel) -> None:
    event = normalized({"text": "hi"}, channel).model_dump_json()

    assert channel.token not in event
    assert channel.secret not in event


def test_sender_with_only_a_first_name(channel: Channel) -> None:
    anna = {"id": 5550001111, "is_bot": False, "first_name": "Anna"}
    chat = {"id": 5550001111, "first_name": "Anna", "type": "private"}

    message = normalized({"text": "/start"}, channel, **{"from": anna, "chat": chat})

    assert message.sender == Sender(first_name="Anna")
    assert message.sender.display_name == "Anna"
    assert message.external_user_id == message.external_chat_id == "5550001111"
    assert message.text == "/start"


PHOTO_SIZES = [
    {"file_id": "AgACAgIAAxkBAAIBZ2Zm-s", "file_unique_id": "AQADs1", "file_size": 1421,
     "width": 90, "height": 67},
    {"file_id": "AgACAgIAAxkBAAIBZ2Zm-m", "file_unique_id": "AQADs2", "file_size": 18756,
     "width": 320, "height": 240},
    {"file_id": "AgACAgIAAxkBAAIBZ2Zm-x", "file_unique_id": "AQADs3", "file_size": 84211,
     "width": 800, "height": 600},
    {"file_id": "AgACAgIAAxkBAAIBZ2Zm-y", "file_unique_id": "AQADs4", "file_size": 161036,
     "width": 1280, "height": 960},
]  # fmt: skip


@pytest.mark.parametrize("order", ["as-sent", "reversed"])
def test_photo_with_caption_keeps_the_largest_size(channel: Channel, order: str) -> None:
    sizes = PHOTO_SIZES if order == "as-sent" else PHOTO_SIZES[::-1]

    message = normalized({"photo": sizes, "caption": "This is what arrived"}, channel)

    assert message.text == "This is what arrived"
    assert files(message) == [
        Attachment(id="-", kind="photo", size=161036, platform_file_id="AgACAgIAAxkBAAIBZ2Zm-y")
    ]


def test_photo_without_caption(channel: Channel) -> None:
    message = normalized({"photo": PHOTO_SIZES}, channel)

    assert message.text is None
    assert [a.kind for a in message.attachments] == ["photo"]


def test_document(channel: Channel) -> None:
    document = {
        "file_name": "invoice-2024-06.pdf",
        "mime_type": "application/pdf",
        "file_id": "BQACAgIAAxkBAAICA2Zm",
        "file_unique_id": "AgADxT4AAl",
        "file_size": 48213,
    }

    message = normalized({"document": document}, channel)

    assert message.text is None
    assert files(message) == [
        Attachment(
            id="-",
            kind="document",
            name="invoice-2024-06.pdf",
            mime_type="application/pdf",
            size=48213,
            platform_file_id="BQACAgIAAxkBAAICA2Zm",
        )
    ]


def test_every_file_gets_its_own_id_and_waits_for_its_download(channel: Channel) -> None:
    first = normalized({"photo": PHOTO_SIZES}, channel)
    second = normalized({"photo": PHOTO_SIZES}, channel)

    [a], [b] = first.attachments, second.attachments
    assert a.id != b.id
    assert a.state == b.state == "pending"


def test_a_file_over_20_mb_is_too_large_for_bots_but_keeps_its_name_and_size(
    channel: Channel,
) -> None:
    video = {
        "file_name": "unboxing.mp4",
        "mime_type": "video/mp4",
        "file_id": "BAACAgIAAxkBAAICC2Zm",
        "file_unique_id": "AgADzT4AAl",
        "file_size": 21 * 1024 * 1024,
    }

    message = normalized({"document": video}, channel)

    [attachment] = message.attachments
    assert attachment.state == "too_large"
    assert (attachment.name, attachment.size) == ("unboxing.mp4", 21 * 1024 * 1024)
    assert attachment.error is not None and "20 MB" in attachment.error


def test_document_with_caption(channel: Channel) -> None:
    document = {
        "file_name": "receipt.jpg",
        "mime_type": "image/jpeg",
        "file_id": "BQACAgIAAxkBAAICB2Zm",
        "file_unique_id": "AgADyT4AAl",
        "file_size": 90211,
    }

    message = normalized({"document": document, "caption": "the receipt"}, channel)

    assert message.text == "the receipt"
    assert message.attachments[0].name == "receipt.jpg"


def test_voice_message(channel: Channel) -> None:
    voice = {
        "duration": 4,
        "mime_type": "audio/ogg",
        "file_id": "AwACAgIAAxkBAAICBGZm",
        "file_unique_id": "AgADyz4AAl",
        "file_size": 15377,
    }

    message = normalized({"voice": voice}, channel)

    assert message.text is None
    assert files(message) == [
        Attachment(
            id="-",
            kind="voice",
            mime_type="audio/ogg",
            size=15377,
            platform_file_id="AwACAgIAAxkBAAICBGZm",
        )
    ]


STICKER = {
    "width": 512,
    "height": 512,
    "emoji": "👍",
    "set_name": "HotCherry",
    "is_animated": True,
    "is_video": False,
    "type": "regular",
    "file_id": "CAACAgIAAxkBAAICBWZm",
    "file_unique_id": "AgADBQADwDZPEw",
    "file_size": 25414,
}


def test_sticker_becomes_its_emoji(channel: Channel) -> None:
    message = normalized({"sticker": STICKER}, channel)

    assert message.text == "👍"
    assert message.attachments == []


def test_sticker_without_emoji(channel: Channel) -> None:
    sticker = {k: v for k, v in STICKER.items() if k != "emoji"}

    assert normalized({"sticker": sticker}, channel).text == "[sticker]"


def test_location(channel: Channel) -> None:
    message = normalized({"location": {"latitude": 55.751244, "longitude": 37.618423}}, channel)

    assert message.text == "[location] 55.751244, 37.618423"
    assert message.attachments == []


def test_contact(channel: Channel) -> None:
    contact = {
        "phone_number": "+79991234567",
        "first_name": "Maria",
        "last_name": "Ivanova",
        "user_id": 5559876543,
    }

    message = normalized({"contact": contact}, channel)

    assert message.text == "[contact] Maria Ivanova +79991234567"


def test_contact_with_only_a_first_name(channel: Channel) -> None:
    contact = {"phone_number": "+4915112345678", "first_name": "Jonas"}

    assert normalized({"contact": contact}, channel).text == "[contact] Jonas +4915112345678"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"dice": {"emoji": "🎲", "value": 4}}, id="dice"),
        pytest.param(
            {
                "story": {
                    "chat": {"id": -1001987654321, "title": "Shop", "type": "channel"},
                    "id": 7,
                }
            },
            id="forwarded story",
        ),
    ],
)
def test_unsupported_content_still_reaches_an_agent(
    channel: Channel, content: dict[str, Any]
) -> None:
    message = normalized(content, channel)

    assert message.text == "[unsupported message]"
    assert message.attachments == []
    assert message.external_message_id == "1042"


@pytest.mark.parametrize(
    "chat",
    [
        pytest.param({"id": -4123456789, "title": "Shop customers", "type": "group"}, id="group"),
        pytest.param(
            {"id": -1001234567890, "title": "Shop community", "type": "supergroup"},
            id="supergroup",
        ),
    ],
)
def test_group_chat_messages_are_not_customer_messages(
    channel: Channel, chat: dict[str, Any]
) -> None:
    assert normalize(update({"text": "hi all"}, chat=chat), channel) is None


BOT = {"id": 7012345678, "is_bot": True, "first_name": "Support", "username": "shop_support_bot"}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            {
                "update_id": 815307002,
                "edited_message": {
                    "message_id": 1042,
                    "from": IVAN,
                    "chat": PRIVATE_CHAT,
                    "date": SENT,
                    "edit_date": SENT + 60,
                    "text": "Hello, my order #124 has not arrived",
                },
            },
            id="edited_message",
        ),
        pytest.param(
            {
                "update_id": 815307003,
                "my_chat_member": {
                    "chat": PRIVATE_CHAT,
                    "from": IVAN,
                    "date": SENT,
                    "old_chat_member": {"status": "member", "user": BOT},
                    "new_chat_member": {"status": "kicked", "until_date": 0, "user": BOT},
                },
            },
            id="my_chat_member (user blocked the bot)",
        ),
        pytest.param(
            {
                "update_id": 815307004,
                "callback_query": {
                    "id": "4382bfdwdsb323b2d9",
                    "from": IVAN,
                    "chat_instance": "-8412345678901234567",
                    "data": "rate:5",
                },
            },
            id="callback_query",
        ),
    ],
)
def test_updates_without_a_new_message_are_ignored(
    channel: Channel, payload: dict[str, Any]
) -> None:
    assert normalize(Update.model_validate(payload), channel) is None
