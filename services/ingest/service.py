"""ingest's operations, shared by its HTTP views and bus handlers."""

from __future__ import annotations

import hmac

from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database, insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatReplyPosted, DeliveryUpdated, InboundMessage
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


async def list_channels(session: AsyncSession) -> list[Channel]:
    return list((await session.scalars(select(Channel).order_by(Channel.created_at))).all())


def secret_matches(channel: Channel, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(
        presented.encode(), channel.secret.encode()
    )


async def accept_inbound(db: Database, key: str, message: InboundMessage) -> bool:
    """Record the platform message once and queue its event; False if it was seen before."""
    async with db.transaction() as session:
        inserted = await session.execute(
            insert_ignore(session, InboundKey.__table__).values(key=key, received_at=utcnow())  # type: ignore[arg-type]
        )
        if inserted.rowcount == 0:  # type: ignore[attr-defined]
            return False
        await emit(session, message, subject=message.channel_id)
    return True


class TransientDeliveryError(Exception):
    """The platform may accept the message later: let the bus retry."""


async def deliver_reply(db: Database, bots: TelegramBots, reply: ChatReplyPosted) -> None:
    message = reply.message
    async with db.transaction() as session:
        done = await session.get(Delivery, message.id)
        channel = await session.get(Channel, reply.channel_id)
    if done is not None:
        return  # redelivered event: this message was already sent (or failed for good)
    status, platform_id, error = "failed", None, None
    if channel is None or not channel.active:
        error = "The channel of this chat is no longer active."
    else:
        try:
            sent = await bots.for_channel(channel).send_message(
                chat_id=int(reply.external_chat_id), text=message.text or ""
            )
            status, platform_id = "sent", str(sent.message_id)
        except TelegramRetryAfter as exc:
            raise TransientDeliveryError(f"rate limited for {exc.retry_after}s") from exc
        except (TelegramServerError, TelegramNetworkError) as exc:
            raise TransientDeliveryError(type(exc).__name__) from exc
        except TelegramForbiddenError:
            error = "The customer blocked the bot or deactivated their account."
        except TelegramUnauthorizedError:
            error = "The channel's bot token is no longer valid."
        except TelegramBadRequest as exc:
            error = f"Telegram rejected the message: {exc.message}"
    async with db.transaction() as session:
        session.add(
            Delivery(
                message_id=message.id,
                chat_id=reply.chat_id,
                channel_id=reply.channel_id,
                status=status,
                platform_message_id=platform_id,
                error=error,
                updated_at=utcnow(),
            )
        )
        await emit(
            session,
            DeliveryUpdated(
                message_id=message.id,
                chat_id=reply.chat_id,
                status=status,
                platform_message_id=platform_id,
                error=error,
            ),
            subject=reply.chat_id,
        )
