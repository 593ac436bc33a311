"""ingest's operations, shared by its HTTP views and bus handlers."""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from typing import cast

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.batching import GroupCommit
from libs.common.db import Database, insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatReplyPosted, DeliveryStatus, DeliveryUpdated, InboundMessage
from libs.common.outbox import emit
from services.ingest.models import Channel, Delivery, InboundKey, TelegramChannelIn
from services.ingest.telegram import TelegramBots


async def create_channel(
    session: AsyncSession, data: TelegramChannelIn, default_api: str
) -> Channel:
    channel = Channel(
        id=new_id(),
        kind=data.kind,
        name=data.name,
        queue_id=data.queue_id,
        api_base=(data.api_base or default_api).rstrip("/"),
        token=data.token,
        secret=data.secret,
        active=True,
        created_at=utcnow(),
    )
    session.add(channel)
    return channel


async def get_channel(session: AsyncSession, channel_id: str) -> Channel | None:
    return await session.get(Channel, channel_id)


class ChannelCache:
    """Channels by id for the webhooks, re-read after `ttl_s`: one query less per update.

    A deactivated channel or a changed secret takes effect within `ttl_s`.
    """

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Channel | None]] = {}

    async def get(self, channel_id: str) -> Channel | None:
        now = time.monotonic()
        entry = self._entries.get(channel_id)
        if entry is None or now - entry[0] > self.ttl_s:
            async with self.db.sessions() as session:
                channel = await get_channel(session, channel_id)
            if len(self._entries) > 10_000:  # unknown ids posted at us must not grow it forever
                self._entries.clear()
            entry = self._entries[channel_id] = (now, channel)
        return entry[1]


async def list_channels(session: AsyncSession) -> list[Channel]:
    return list((await session.scalars(select(Channel).order_by(Channel.created_at))).all())


def secret_matches(channel: Channel, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(
        presented.encode(), channel.secret.encode()
    )


InboundCommits = GroupCommit[tuple[str, InboundMessage], bool]
INBOUND_KEYS = cast(Table, InboundKey.__table__)


def inbound_commits(db: Database) -> InboundCommits:
    """Webhook updates accepted together in one transaction: `submit((key, message))` answers
    False for a platform message seen before, True once it and its event are committed."""

    async def accept(batch: list[tuple[str, InboundMessage]]) -> list[bool]:
        now = utcnow()
        async with db.transaction() as session:
            new = set(
                await session.scalars(
                    insert_ignore(session, INBOUND_KEYS).returning(INBOUND_KEYS.c.key),
                    [{"key": key, "received_at": now} for key, _ in batch],
                )
            )
            accepted = []
            for key, message in batch:
                accepted.append(key in new)
                if key in new:
                    new.discard(key)  # the same update twice in one batch: once
                    emit(session, message, subject=message.channel_id)
        return accepted

    return GroupCommit(accept, name="ingest.inbound")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a reply keeps trying before the agent is told it failed."""

    attempts: int
    backoff_s: float
    max_wait_s: float = 60.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        return min(retry_after or self.backoff_s * 2 ** (attempt - 1), self.max_wait_s)


@dataclass(frozen=True)
class Outcome:
    status: DeliveryStatus
    platform_message_id: str | None = None
    error: str | None = None


async def send_telegram(bot: Bot, reply: ChatReplyPosted, policy: RetryPolicy) -> Outcome:
    """Send one reply, waiting out rate limits and outages; never more than `policy` allows.

    Retrying here, in order, rather than through the bus keeps a chat's replies in sequence.
    """
    for attempt in range(1, policy.attempts + 1):
        retry_after: float | None = None
        try:
            sent = await bot.send_message(
                chat_id=int(reply.external_chat_id), text=reply.message.text or ""
            )
            return Outcome("sent", str(sent.message_id))
        except TelegramRetryAfter as exc:
            reason, retry_after = "Telegram kept rate-limiting the bot", exc.retry_after
        except (TelegramServerError, TelegramNetworkError):
            reason = "Telegram could not be reached"
        except TelegramForbiddenError:
            return Outcome("failed", error="The customer blocked the bot or deleted their account.")
        except TelegramUnauthorizedError:
            return Outcome("failed", error="The channel's bot token is no longer valid.")
        except TelegramBadRequest as exc:
            return Outcome("failed", error=f"Telegram rejected the message: {exc.message}")
        if attempt < policy.attempts:
            await asyncio.sleep(policy.wait(attempt, retry_after))
    return Outcome("failed", error=f"{reason}; gave up after {policy.attempts} attempts.")


async def deliver_reply(
    db: Database, bots: TelegramBots, reply: ChatReplyPosted, policy: RetryPolicy
) -> None:
    message = reply.message
    async with db.transaction() as session:
        done = await session.get(Delivery, message.id)
        channel = await session.get(Channel, reply.channel_id)
    if done is not None:
        return  # redelivered event: this message was already sent (or failed for good)
    if channel is None or not channel.active:
        outcome = Outcome("failed", error="The channel of this chat is no longer active.")
    else:
        outcome = await send_telegram(bots.for_channel(channel), reply, policy)
    async with db.transaction() as session:
        session.add(
            Delivery(
                message_id=message.id,
                chat_id=reply.chat_id,
                channel_id=reply.channel_id,
                status=outcome.status,
                platform_message_id=outcome.platform_message_id,
                error=outcome.error,
                updated_at=utcnow(),
            )
        )
        emit(
            session,
            DeliveryUpdated(
                message_id=message.id,
                chat_id=reply.chat_id,
                status=outcome.status,
                platform_message_id=outcome.platform_message_id,
                error=outcome.error,
            ),
            subject=reply.chat_id,
        )
