"""Telegram: a Bot API `Update` into an `InboundMessage`; aiogram bots to send replies."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import Message, Update

from libs.common.envelope import utcnow
from libs.common.events import Attachment, ChatReplyPosted, InboundMessage, Sender
from services.ingest.models import Channel
from services.ingest.sending import Outcome, RetryPolicy

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


class TelegramSender:
    """Replies through the Bot API (`ReplySender` for `telegram` channels)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.bots = TelegramBots()

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        """Send one reply, waiting out rate limits and outages; never more than the policy allows.

        Retrying here, in order, rather than through the bus keeps a chat's replies in sequence.
        """
        bot, policy = self.bots.for_channel(channel), self.policy
        for attempt in range(1, policy.attempts + 1):
            retry_after: float | None = None
            started = utcnow()
            try:
                sent = await bot.send_message(
                    chat_id=int(reply.external_chat_id), text=reply.message.text or ""
                )
                return Outcome("sent", str(sent.message_id), sent_at=started, channel_health="ok")
            except TelegramRetryAfter as exc:
                reason, retry_after = "Telegram kept rate-limiting the bot", exc.retry_after
            except (TelegramServerError, TelegramNetworkError):
                reason = "Telegram could not be reached"
            except TelegramForbiddenError:
                return Outcome(
                    "failed", error="The customer blocked the bot or deleted their account."
                )
            except TelegramUnauthorizedError:
                return Outcome(
                    "failed",
                    error="The channel's bot token is no longer valid.",
                    channel_health="token_invalid",
                )
            except TelegramBadRequest as exc:
                return Outcome("failed", error=f"Telegram rejected the message: {exc.message}")
            if attempt < policy.attempts:
                await asyncio.sleep(policy.wait(attempt, retry_after))
        return Outcome("failed", error=f"{reason}; gave up after {policy.attempts} attempts.")

    async def close(self) -> None:
        await self.bots.close()
