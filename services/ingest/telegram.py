"""Telegram: a Bot API `Update` into an `InboundMessage` (or, for an edit, an `InboundEdited`);
aiogram bots to send replies.

How updates reach `normalize` (webhook or long polling) is in `telegram_inbound.py` and
`telegram_link.py`; checking a bot token and registering the webhook in `telegram_setup.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

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
from libs.common.events import (
    Attachment,
    ChatReplyPosted,
    InboundEdited,
    InboundMessage,
    Sender,
)
from services.ingest.models import Channel
from services.ingest.sending import Outcome, RetryPolicy, partly_sent, split_text

log = logging.getLogger(__name__)

UNSUPPORTED = "unsupported message"
TEXT_LIMIT = 4096  # characters per sendMessage text
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


class TelegramSender:
    """Replies through the Bot API (`ReplySender` for `telegram` channels).

    What Telegram's answers mean for a reply:
    - 429 (waits `retry_after`), 5xx, no answer: try again, up to the policy's attempts;
    - 403 (blocked by the user, user deactivated): failed, and the customer is unreachable;
    - 401: failed, and the channel's token is flagged invalid;
    - any other 400: failed with Telegram's description.
    A text longer than 4096 characters goes as several messages, in order.
    """

    def __init__(self, policy: RetryPolicy, bots: TelegramBots | None = None) -> None:
        self.policy = policy
        self.bots = bots or TelegramBots()

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        bot = self.bots.for_channel(channel)
        parts = split_text(reply.message.text or "", TEXT_LIMIT)
        outcome = Outcome("failed")
        for number, part in enumerate(parts, 1):
            outcome = await self._send_part(bot, int(reply.external_chat_id), part)
            if outcome.status == "failed":
                return dataclasses.replace(
                    outcome, error=partly_sent(outcome.error or "", number - 1, len(parts))
                )
        return outcome

    async def _send_part(self, bot: Bot, chat_id: int, text: str) -> Outcome:
        """Send one message, waiting out rate limits and outages; never more than the policy
        allows. Retrying here, in order, rather than through the bus keeps a chat's replies in
        sequence."""
        policy = self.policy
        for attempt in range(1, policy.attempts + 1):
            retry_after: float | None = None
            started = utcnow()
            try:
                sent = await bot.send_message(chat_id=chat_id, text=text)
                return Outcome("sent", str(sent.message_id), sent_at=started, channel_health="ok")
            except TelegramRetryAfter as exc:
                reason, retry_after = "Telegram kept rate-limiting the bot", exc.retry_after
            except (TelegramServerError, TelegramNetworkError):
                reason = "Telegram could not be reached"
            except TelegramForbiddenError:
                return Outcome("failed", error=BLOCKED, recipient_unreachable=True)
            except TelegramUnauthorizedError:
                return Outcome("failed", error=TOKEN_INVALID, channel_health="token_invalid")
            except TelegramBadRequest as exc:
                return Outcome("failed", error=f"Telegram rejected the message: {exc.message}")
            if attempt < policy.attempts:
                await asyncio.sleep(policy.wait(attempt, retry_after))
        return Outcome("failed", error=f"{reason}; gave up after {policy.attempts} attempts.")

    async def close(self) -> None:
        await self.bots.close()
