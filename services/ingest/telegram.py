"""Telegram: a Bot API `Update` into an `InboundMessage`; aiogram bots to send replies.

Replies go as `sendMessage` parts of at most 4096 characters; a file as `sendPhoto` (pictures
Telegram shows as photos) or `sendDocument`, with the text as its caption when it fits in one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, Message, Update

from libs.common.blobs import BlobStore
from libs.common.envelope import utcnow
from libs.common.events import Attachment, ChatReplyPosted, InboundMessage, MessageView, Sender
from services.ingest.models import Channel
from services.ingest.sending import Outcome, RetryPolicy, SendFailed, split_text

log = logging.getLogger(__name__)

UNSUPPORTED = "unsupported message"
TEXT_LIMIT = 4096  # characters of one message
CAPTION_LIMIT = 1024  # characters of a file's caption
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # bytes bots may download through the Bot API
PHOTO_LIMIT = 10 * 1024 * 1024  # bytes of a photo; larger pictures go as documents
PHOTO_TYPES = {"image/jpeg", "image/png", "image/webp"}
FILE_TOO_LARGE = "The file is too large for Telegram (bots may send files of up to 50 MB)."


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


def _file(kind: str, file_id: str, size: int | None, **details: str | None) -> Attachment:
    """A file of a customer's message, to be downloaded, or too large for bots to download."""
    if size is not None and size > DOWNLOAD_LIMIT:
        return Attachment(
            kind=kind,
            size=size,
            state="too_large",
            error="Telegram lets bots download files of at most 20 MB.",
            platform_file_id=file_id,
            **details,
        )
    return Attachment(kind=kind, size=size, platform_file_id=file_id, **details)


def _content(message: Message) -> tuple[str | None, list[Attachment]]:
    text = message.text or message.caption
    if message.photo:
        largest = max(message.photo, key=lambda p: p.width * p.height)
        return text, [_file("photo", largest.file_id, largest.file_size)]
    for kind in ("document", "voice", "audio", "video", "video_note", "animation"):
        media = getattr(message, kind)
        if media is not None:
            return text, [
                _file(
                    kind,
                    media.file_id,
                    media.file_size,
                    name=getattr(media, "file_name", None),
                    mime_type=getattr(media, "mime_type", None),
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


Part = Callable[[], Awaitable[Message]]


class TelegramSender:
    """Replies through the Bot API (`ReplySender` for `telegram` channels)."""

    def __init__(self, policy: RetryPolicy, bots: TelegramBots, blobs: BlobStore) -> None:
        self.policy = policy
        self.bots = bots
        self.blobs = blobs

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        """Send a reply's parts in order, each waiting out rate limits and outages; never more
        than the policy allows.

        Retrying here, in order, rather than through the bus keeps a chat's replies in sequence.
        """
        bot = self.bots.for_channel(channel)
        try:
            parts = await self._parts(bot, int(reply.external_chat_id), reply.message)
        except SendFailed as failed:
            return Outcome("failed", error=failed.error)
        message_id, started = "", utcnow()
        for number, part in enumerate(parts, 1):
            try:
                message_id, started = await self._send_part(part)
            except SendFailed as failed:
                error = failed.error
                if number > 1:
                    error += f" (The first {number - 1} of its {len(parts)} parts were sent.)"
                return Outcome("failed", error=error, channel_health=failed.health)
        return Outcome("sent", message_id, sent_at=started, channel_health="ok")

    async def _parts(self, bot: Bot, chat_id: int, message: MessageView) -> list[Part]:
        """The calls that make up a reply: its text (unless it is the caption), then its files."""
        text, files = message.text or "", message.attachments
        caption: str | None = None
        if files and len(text) <= CAPTION_LIMIT:
            caption, text = text or None, ""
        parts: list[Part] = []
        if text or not files:
            parts += [
                partial(bot.send_message, chat_id=chat_id, text=p)
                for p in split_text(text, TEXT_LIMIT)
            ]
        for number, file in enumerate(files):
            blob = await self.blobs.get(file.blob_key) if file.blob_key else None
            if blob is None:
                raise SendFailed("The file is no longer stored.")
            upload = BufferedInputFile(blob.data, filename=file.name or blob.name)
            shown = caption if number == 0 else None
            if file.mime_type in PHOTO_TYPES and blob.size <= PHOTO_LIMIT:
                parts.append(partial(bot.send_photo, chat_id, upload, caption=shown))
            else:
                parts.append(partial(bot.send_document, chat_id, upload, caption=shown))
        return parts

    async def _send_part(self, part: Part) -> tuple[str, datetime]:
        """The sent message's id and when it was asked for; raises SendFailed."""
        policy = self.policy
        for attempt in range(1, policy.attempts + 1):
            retry_after: float | None = None
            started = utcnow()
            try:
                sent = await part()
                return str(sent.message_id), started
            except TelegramRetryAfter as exc:
                reason, retry_after = "Telegram kept rate-limiting the bot", exc.retry_after
            except TelegramEntityTooLarge:  # a TelegramNetworkError: before that one
                raise SendFailed(FILE_TOO_LARGE) from None
            except (TelegramServerError, TelegramNetworkError):
                reason = "Telegram could not be reached"
            except ClientDecodeError as exc:  # not JSON: a proxy's page in front of the Bot API
                if "413" in str(exc.data):
                    raise SendFailed(FILE_TOO_LARGE) from None
                reason = "Telegram could not be reached"
            except TelegramForbiddenError:
                raise SendFailed("The customer blocked the bot or deleted their account.") from None
            except TelegramUnauthorizedError:
                raise SendFailed(
                    "The channel's bot token is no longer valid.", "token_invalid"
                ) from None
            except TelegramBadRequest as exc:
                raise SendFailed(f"Telegram rejected the message: {exc.message}") from None
            if attempt < policy.attempts:
                await asyncio.sleep(policy.wait(attempt, retry_after))
        raise SendFailed(f"{reason}; gave up after {policy.attempts} attempts.")
