"""Telegram: a Bot API `Update` into an `InboundMessage`; aiogram bots to send replies."""

from __future__ import annotations

import logging
from datetime import UTC

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message, Update

from libs.common.events import Attachment, InboundMessage, Sender
from services.ingest.models import Channel

log = logging.getLogger(__name__)

UNSUPPORTED = "unsupported message"


def normalize(update: Update, channel: Channel) -> InboundMessage | None:
    """The customer message in `update`, or None for updates that are not one (logged)."""
    message = update.message
    if message is None:
        log.info(
            "telegram update without a new message ignored", extra={"update_id": update.update_id}
        )
        return None
    if message.chat.type != "private" or message.from_user is None:
        # Policy: chatdesk serves one-to-one conversations; group traffic is not a customer chat.
        log.info("telegram non-private chat ignored", extra={"chat_type": message.chat.type})
        return None
    user = message.from_user
    text, attachments = _content(message)
    return InboundMessage(
        channel_id=channel.id,
        queue_id=channel.queue_id,
        platform="telegram",
        external_user_id=str(user.id),
        external_chat_id=str(message.chat.id),
        external_message_id=str(message.message_id),
        sender=Sender(
            first_name=user.first_name,
            last_name=user.last_name,
            username=user.username,
            language_code=user.language_code,
        ),
        text=text,
        attachments=attachments,
        sent_at=message.date.astimezone(UTC),
    )


def _content(message: Message) -> tuple[str | None, list[Attachment]]:
    text = message.text or message.caption
    if message.photo:
        largest = max(message.photo, key=lambda p: p.width * p.height)
        return text, [
            Attachment(kind="photo", size=largest.file_size, platform_file_id=largest.file_id)
        ]
    for kind in ("document", "voice", "audio", "video", "video_note", "animation"):
        media = getattr(message, kind)
        if media is not None:
            return text, [
                Attachment(
                    kind=kind,
                    name=getattr(media, "file_name", None),
                    mime_type=getattr(media, "mime_type", None),
                    size=media.file_size,
                    platform_file_id=media.file_id,
                )
            ]
    if message.sticker:
        return message.sticker.emoji or "[sticker]", []
    if message.location:
        loc = message.location
        return f"[location] {loc.latitude}, {loc.longitude}", []
    if message.contact:
        c = message.contact
        name = " ".join(p for p in (c.first_name, c.last_name) if p)
        return f"[contact] {name} {c.phone_number}", []
    if text is None:
        return f"[{UNSUPPORTED}]", []
    return text, []


class TelegramBots:
    """One aiogram `Bot` per channel, pointed at the channel's Bot API server."""

    def __init__(self) -> None:
        self._bots: dict[tuple[str, str, str], Bot] = {}

    def for_channel(self, channel: Channel) -> Bot:
        key = (channel.id, channel.token, channel.api_base)
        bot = self._bots.get(key)
        if bot is None:
            session = AiohttpSession(api=TelegramAPIServer.from_base(channel.api_base))
            bot = self._bots[key] = Bot(channel.token, session=session)
        return bot

    async def close(self) -> None:
        for bot in self._bots.values():
            await bot.session.close()
        self._bots.clear()
