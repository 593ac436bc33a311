"""Setting a Telegram channel up with Telegram: checking its bot token (getMe) and registering
or dropping its webhook (setWebhook, getWebhookInfo, deleteWebhook).

Every reason these functions give is meant for an administrator's eyes: Telegram's own
description, or the kind of failure; never the token (aiogram's request URLs carry it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import User, WebhookInfo

from libs.common.envelope import utcnow
from libs.common.logs import redact
from services.ingest.models import Channel
from services.ingest.telegram import new_bot

log = logging.getLogger(__name__)

# The updates chatdesk reads: new messages and their edits. Everything else (group membership,
# callback queries, reactions...) is not asked for, so Telegram does not send it at all.
ALLOWED_UPDATES = ["message", "edited_message"]


class TokenRefused(Exception):
    """Telegram does not accept the bot token."""


class TelegramUnavailable(Exception):
    """Telegram could not be asked (no answer, an outage, a rate limit)."""


def reason(exc: BaseException, token: str) -> str:
    """What went wrong, fit for an API answer or a channel's status: no token in it."""
    text = exc.message if isinstance(exc, TelegramAPIError) else type(exc).__name__
    return redact(text.replace(token, "<token>"))


async def check_token(token: str, api_base: str) -> User:
    """The bot `token` belongs to, as getMe tells it; raises TokenRefused or
    TelegramUnavailable."""
    bot = new_bot(token, api_base)
    try:
        return await bot.get_me()
    except (TelegramUnauthorizedError, TelegramNotFound) as exc:
        # 401 for a token Telegram does not know (revoked); 404 for one that is no token at all.
        raise TokenRefused(f"Telegram refused the bot token ({reason(exc, token)})") from None
    except TelegramRetryAfter as exc:
        raise TelegramUnavailable(
            f"Telegram asks to wait {exc.retry_after} s before checking the token again"
        ) from None
    except (TelegramNetworkError, TelegramServerError) as exc:
        raise TelegramUnavailable(
            f"Telegram could not be reached to check the token ({reason(exc, token)})"
        ) from None
    except TelegramAPIError as exc:
        raise TokenRefused(f"Telegram refused the bot token ({reason(exc, token)})") from None
    finally:
        await bot.session.close()


def webhook_url(public_base_url: str, channel: Channel) -> str:
    return f"{public_base_url.rstrip('/')}/webhooks/telegram/{channel.id}"


@dataclass(frozen=True)
class Registration:
    """What setting up a channel's webhook came to: ok, or why not (`error`)."""

    error: str | None = None
    token_refused: bool = False


async def register_webhook(bot: Bot, channel: Channel, public_base_url: str) -> Registration:
    """setWebhook: our URL for the channel, its secret, the updates we read."""
    try:
        await bot.set_webhook(
            url=webhook_url(public_base_url, channel),
            secret_token=channel.secret,
            allowed_updates=ALLOWED_UPDATES,
        )
    except TelegramUnauthorizedError:
        return Registration("Telegram refused the bot token (Unauthorized)", token_refused=True)
    except TelegramAPIError as exc:
        why = reason(exc, channel.token)
        log.warning("telegram setWebhook failed", extra={"channel_id": channel.id, "why": why})
        return Registration(f"Telegram did not take the webhook: {why}")
    return Registration()


async def drop_webhook(bot: Bot, channel: Channel) -> bool:
    """deleteWebhook, keeping pending updates for getUpdates; False if Telegram did not do it."""
    try:
        await bot.delete_webhook(drop_pending_updates=False)
    except TelegramAPIError as exc:
        log.warning(
            "telegram deleteWebhook failed",
            extra={"channel_id": channel.id, "why": reason(exc, channel.token)},
        )
        return False
    return True


def delivery_trouble(info: WebhookInfo, within: timedelta) -> str | None:
    """Why Telegram cannot deliver to the webhook, if its last error is recent and updates are
    waiting; None when deliveries go through. Telegram keeps the last error's date even after
    deliveries recover, hence both conditions."""
    if info.last_error_date is None or not info.pending_update_count:
        return None
    if utcnow() - info.last_error_date > within:
        return None
    return f"Telegram cannot deliver updates to the webhook: {info.last_error_message or '?'}"
