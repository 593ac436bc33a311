"""Telegram: a Bot API `Update` into an `InboundMessage` (or, for an edit, an `InboundEdited`);
aiogram bots to send replies.

Replies go as `sendMessage` parts of at most 4096 characters; a file as `sendPhoto` (pictures
Telegram shows as photos) or `sendDocument`, with the text as its caption when it fits in one.
How updates reach `normalize` (webhook or long polling) is in `telegram_inbound.py` and
`telegram_link.py`; checking a bot token and registering the webhook in `telegram_setup.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

from aiogram import Bot, methods
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
from aiogram.methods.base import Response
from aiogram.types import BufferedInputFile, Message, Update

from libs.common.blobs import BlobStore
from libs.common.envelope import utcnow
from libs.common.events import (
    Attachment,
    ChatReplyPosted,
    InboundEdited,
    InboundMessage,
    MessageView,
    Sender,
)
from services.ingest.models import Channel
from services.ingest.sending import Outcome, RetryPolicy, SendFailed, partly_sent, split_text

log = logging.getLogger(__name__)

UNSUPPORTED = "unsupported message"
TEXT_LIMIT = 4096  # characters of one message
CAPTION_LIMIT = 1024  # characters of a file's caption
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # bytes bots may download through the Bot API
PHOTO_LIMIT = 10 * 1024 * 1024  # bytes of a photo; larger pictures go as documents
PHOTO_TYPES = {"image/jpeg", "image/png", "image/webp"}
FILE_TOO_LARGE = "The file is too large for Telegram (bots may send files of up to 50 MB)."
BLOCKED = "The customer blocked the bot or deleted their account."
TOKEN_INVALID = "Telegram refused the channel's bot token (401 Unauthorized): it needs a new one."


def normalize(update: Update, channel: Channel) -> InboundMessage | None:
    """The customer message in `update`, or None for updates that are not one (logged)."""
    message = update.message
    if message is None:
        log.info(
            "telegram update without a new message ignored", extra={"update_id": update.update_id}
        )
        return None
    if not _private(message):
        return None
    assert message.from_user is not None  # checked by _private
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
        # Telegram numbers a chat's messages in order: it orders those sent in the same second
        # (an album's items) and those that arrive out of order.
        sequence=message.message_id,
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


def normalize_edit(update: Update, channel: Channel) -> InboundEdited | None:
    """The customer's edit in `update` (`edited_message`), or None when it is none."""
    message = update.edited_message
    if message is None or not _private(message):
        return None
    text, _ = _content(message)
    return InboundEdited(
        channel_id=channel.id,
        platform="telegram",
        external_chat_id=str(message.chat.id),
        external_message_id=str(message.message_id),
        text=text,
        edited_at=_edit_time(message),
    )


def _edit_time(message: Message) -> datetime:
    # aiogram keeps `edit_date` as Telegram's unix seconds; an edit without one does not
    # happen, and the message's own date is the fallback.
    if message.edit_date is None:
        return message.date.astimezone(UTC)
    return datetime.fromtimestamp(message.edit_date, UTC)


def _private(message: Message) -> bool:
    if message.chat.type != "private" or message.from_user is None:
        # Policy: chatdesk serves one-to-one conversations; group traffic is not a customer chat.
        log.info("telegram non-private chat ignored", extra={"chat_type": message.chat.type})
        return False
    return True


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


# aiogram reads each answer into `Response[T]` of the method's result type. pydantic keeps a
# parametrized model only while something refers to it, so without these it built the class anew
# for every call: 160 µs each, 3 to 4% of ingest's CPU under load (a profile of `make bench`).
_RESPONSES = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (
        methods.DeleteWebhook,
        methods.GetFile,
        methods.GetMe,
        methods.GetUpdates,
        methods.GetUserProfilePhotos,
        methods.GetWebhookInfo,
        methods.SendDocument,
        methods.SendMessage,
        methods.SendPhoto,
        methods.SetWebhook,
    )
)


def new_bot(token: str, api_base: str) -> Bot:
    """An aiogram `Bot` talking to the Bot API server at `api_base`; close its session."""
    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_base)))


class TelegramBots:
    """One aiogram `Bot` per channel, pointed at the channel's Bot API server, shared by the
    replies, the webhook registration and the long poller of that channel."""

    def __init__(self) -> None:
        self._bots: dict[tuple[str, str, str], Bot] = {}

    def for_channel(self, channel: Channel) -> Bot:
        key = (channel.id, channel.token, channel.api_base)
        bot = self._bots.get(key)
        if bot is None:
            bot = self._bots[key] = new_bot(channel.token, channel.api_base)
        return bot

    async def close(self) -> None:
        for bot in self._bots.values():
            await bot.session.close()
        self._bots.clear()


Part = Callable[[], Awaitable[Message]]


class TelegramSender:
    """Replies through the Bot API (`ReplySender` for `telegram` channels).

    What Telegram's answers mean for a reply:
    - 429 (waits `retry_after`), 5xx, no answer: try again, up to the policy's attempts;
    - 403 (blocked by the user, user deactivated): failed, and the customer is unreachable;
    - 401: failed, and the channel's token is flagged invalid;
    - 413: failed, the file is too large for Telegram;
    - any other 400: failed with Telegram's description.
    """

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
                return Outcome(
                    "failed",
                    error=partly_sent(failed.error, number - 1, len(parts)),
                    channel_health=failed.health,
                    recipient_unreachable=failed.unreachable,
                )
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
                raise SendFailed(BLOCKED, unreachable=True) from None
            except TelegramUnauthorizedError:
                raise SendFailed(TOKEN_INVALID, "token_invalid") from None
            except TelegramBadRequest as exc:
                raise SendFailed(f"Telegram rejected the message: {exc.message}") from None
            if attempt < policy.attempts:
                await asyncio.sleep(policy.wait(attempt, retry_after))
        raise SendFailed(f"{reason}; gave up after {policy.attempts} attempts.")
