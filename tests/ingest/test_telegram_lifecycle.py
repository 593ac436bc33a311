"""A Telegram message's life after it is sent, as ingest reads the updates: its place in the
chat (`sequence`), album items, edits (`normalize_edit`), and what each update becomes for the
inbound commit (`telegram_inbound.events`, one dedup key per update)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram.types import Update

from libs.common.events import InboundEdited, InboundMessage
from services.ingest.models import Channel
from services.ingest.telegram import normalize, normalize_edit
from services.ingest.telegram_inbound import dedup_key, events

SENT = 1718012345
USER_ID = 5551234567
IVAN = {"id": USER_ID, "is_bot": False, "first_name": "Ivan", "last_name": "Petrov"}
PRIVATE_CHAT = {"id": USER_ID, "first_name": "Ivan", "type": "private"}
GROUP_CHAT = {"id": -1001234567890, "title": "Shop community", "type": "supergroup"}
PHOTO = [
    {"file_id": "AgACAgIAAxkBAAIC", "file_unique_id": "AQADc1", "file_size": 84211,
     "width": 800, "height": 600},
]  # fmt: skip


def message_update(update_id: int, **message: Any) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "message": {"from": IVAN, "chat": PRIVATE_CHAT, "date": SENT, **message},
        }
    )


def edit_update(update_id: int, **message: Any) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "edited_message": {"from": IVAN, "chat": PRIVATE_CHAT, "date": SENT, **message},
        }
    )


def test_a_message_carries_telegrams_number_for_ordering(channel: Channel) -> None:
    message = normalize(message_update(815307001, message_id=1042, text="hi"), channel)

    assert message is not None
    assert message.sequence == 1042
    assert message.sent_at == datetime.fromtimestamp(SENT, UTC)


def test_album_items_are_messages_numbered_in_album_order(channel: Channel) -> None:
    """Each item of an album is its own update, sharing `media_group_id` and the date; only
    the first usually has the caption. Their message ids give their order."""
    items = [
        message_update(
            815307010 + n,
            message_id=2000 + n,
            media_group_id="13713985843785429",
            photo=PHOTO,
            **({"caption": "Both sides of the box"} if n == 0 else {}),
        )
        for n in range(3)
    ]

    messages = [normalize(item, channel) for item in reversed(items)]  # arrived backwards

    assert all(m is not None for m in messages)
    ordered = sorted((m for m in messages if m is not None), key=lambda m: (m.sent_at, m.sequence))
    assert [m.sequence for m in ordered] == [2000, 2001, 2002]
    assert [m.text for m in ordered] == ["Both sides of the box", None, None]
    assert all(m.attachments[0].kind == "photo" for m in ordered)


def test_an_edit_names_its_message_and_brings_the_new_text(channel: Channel) -> None:
    update = edit_update(
        815307002, message_id=1042, edit_date=SENT + 60, text="Hello, my order #124 is late"
    )

    assert normalize(update, channel) is None  # not a new message
    edit = normalize_edit(update, channel)

    assert edit == InboundEdited(
        channel_id=channel.id,
        platform="telegram",
        external_chat_id=str(USER_ID),
        external_message_id="1042",
        text="Hello, my order #124 is late",
        edited_at=datetime.fromtimestamp(SENT + 60, UTC),
        received_at=edit.received_at if edit else datetime.now(UTC),
    )


def test_an_edited_caption_is_the_new_text(channel: Channel) -> None:
    update = edit_update(
        815307003, message_id=1043, edit_date=SENT + 5, photo=PHOTO, caption="The right box"
    )

    edit = normalize_edit(update, channel)

    assert edit is not None and edit.text == "The right box"


def test_edits_in_group_chats_are_ignored_like_their_messages(channel: Channel) -> None:
    update = Update.model_validate(
        {
            "update_id": 815307004,
            "edited_message": {
                "message_id": 77,
                "from": IVAN,
                "chat": GROUP_CHAT,
                "date": SENT,
                "edit_date": SENT + 1,
                "text": "hi all (edited)",
            },
        }
    )

    assert normalize_edit(update, channel) is None
    assert events(channel, update) is None


def test_group_chat_messages_are_ignored_with_a_log_line(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Policy: chatdesk serves one-to-one conversations; a bot added to a group would otherwise
    open a chat for every member's message."""
    update = Update.model_validate(
        {
            "update_id": 815307005,
            "message": {
                "message_id": 78,
                "from": IVAN,
                "chat": GROUP_CHAT,
                "date": SENT,
                "text": "hi all",
            },
        }
    )

    with caplog.at_level("INFO", logger="services.ingest.telegram"):
        assert events(channel, update) is None

    assert [(r.getMessage(), r.chat_type) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("telegram non-private chat ignored", "supergroup")
    ]


def test_each_update_is_one_dedup_key(channel: Channel) -> None:
    message = message_update(815307006, message_id=1050, text="hi")
    edit = edit_update(815307007, message_id=1050, edit_date=SENT + 2, text="hi!")

    assert isinstance(events(channel, message), InboundMessage)
    assert isinstance(events(channel, edit), InboundEdited)
    assert dedup_key(channel, message) == f"telegram:{channel.id}:815307006"
    assert dedup_key(channel, edit) == f"telegram:{channel.id}:815307007"
