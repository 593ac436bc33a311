"""ingest's operations, shared by its HTTP views and bus handlers."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import cast

from sqlalchemy import Select, Table, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.batching import GroupCommit
from libs.common.db import Database, insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatReplyPosted, DeliveryStatus, DeliveryUpdated, InboundMessage
from libs.common.outbox import emit
from libs.common.settings import Settings
from services.ingest.meta.graph import Credentials, Graph, GraphError, GraphUnreachable
from services.ingest.meta.items import Receipt
from services.ingest.models import (
    PATCHABLE,
    Channel,
    ChannelPatch,
    Delivery,
    FacebookChannelIn,
    InboundKey,
    TelegramChannelIn,
    Thread,
)
from services.ingest.sending import ChannelHealth, Outcome, ReplySender

# Platforms whose replies must fall within a window after the customer's last message.
WINDOWED_PLATFORMS = {"facebook"}


class ChannelRefused(Exception):
    """A channel that cannot be created as asked: `status` and `detail` for the API."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def check_facebook_page(graph: Graph, credentials: Credentials, page_id: str) -> None:
    """Refuse a page token that Meta does not accept as the token of page `page_id`."""
    try:
        page = await graph.page(credentials)
    except GraphUnreachable as exc:
        raise ChannelRefused(
            502, f"Facebook could not be reached to check the token ({exc})"
        ) from exc
    except GraphError as exc:
        if exc.temporary:
            raise ChannelRefused(502, "Facebook failed to check the token; try again") from exc
        raise ChannelRefused(422, f"Facebook refused the page token: {exc.message}") from exc
    if page.id != page_id:
        raise ChannelRefused(
            422,
            f"the token speaks for {page.id!r}, not for page {page_id!r}: use a page "
            "access token of that page",
        )


async def check_new_channel(
    graph: Graph, data: TelegramChannelIn | FacebookChannelIn, settings: Settings
) -> None:
    if isinstance(data, FacebookChannelIn):
        credentials = Credentials(
            facebook_api_base(data, settings), data.page_token, data.app_secret
        )
        await check_facebook_page(graph, credentials, data.page_id)


async def create_channel(
    session: AsyncSession, data: TelegramChannelIn | FacebookChannelIn, settings: Settings
) -> Channel:
    channel = Channel(
        id=new_id(),
        kind=data.kind,
        name=data.name,
        queue_id=data.queue_id,
        human_agent_tag=False,
        status="ok",
        active=True,
        created_at=utcnow(),
    )
    if isinstance(data, FacebookChannelIn):
        taken = await session.scalar(
            select(Channel.id).where(
                Channel.kind == "facebook", Channel.external_id == data.page_id
            )
        )
        if taken is not None:
            raise ChannelRefused(409, f"page {data.page_id} already has channel {taken}")
        channel.api_base = facebook_api_base(data, settings)
        channel.external_id = data.page_id
        channel.token, channel.secret = data.page_token, data.app_secret
        channel.verify_token = data.verify_token
        channel.human_agent_tag = data.human_agent_tag
    else:
        channel.api_base = (data.api_base or settings.telegram_api_base).rstrip("/")
        channel.token, channel.secret = data.token, data.secret
    session.add(channel)
    return channel


def facebook_api_base(data: FacebookChannelIn, settings: Settings) -> str:
    return (data.api_base or settings.facebook_api_base).rstrip("/")


async def get_channel(session: AsyncSession, channel_id: str) -> Channel | None:
    return await session.get(Channel, channel_id)


async def check_patch(graph: Graph, channel: Channel, patch: ChannelPatch) -> None:
    """Refuse settings the channel's kind does not have, and new credentials Meta refuses."""
    foreign = patch.fields() - PATCHABLE[channel.kind]
    if foreign:
        raise ChannelRefused(422, f"a {channel.kind} channel has no {', '.join(sorted(foreign))}")
    if channel.kind == "facebook" and patch.fields() & {"page_token", "app_secret"}:
        credentials = Credentials(
            channel.api_base,
            patch.page_token or channel.token,
            patch.app_secret or channel.secret,
        )
        await check_facebook_page(graph, credentials, channel.external_id or "")


def apply_patch(channel: Channel, patch: ChannelPatch) -> None:
    """Take the new settings (checked by `check_patch`); new credentials clear the health flag."""
    channel.name = patch.name or channel.name
    channel.token = patch.token or patch.page_token or channel.token
    channel.secret = patch.secret or patch.app_secret or channel.secret
    channel.verify_token = patch.verify_token or channel.verify_token
    if patch.human_agent_tag is not None:
        channel.human_agent_tag = patch.human_agent_tag
    if patch.fields() & {"token", "page_token"}:
        channel.status = "ok"


async def set_channel_health(db: Database, channel_id: str, health: ChannelHealth) -> None:
    async with db.transaction() as session:
        await session.execute(update(Channel).where(Channel.id == channel_id).values(status=health))


class ChannelCache:
    """Channels by id (and Facebook channels by page) for the webhooks, re-read after `ttl_s`:
    one query less per update.

    A deactivated channel or a changed secret takes effect within `ttl_s`.
    """

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], tuple[float, Channel | None]] = {}

    async def get(self, channel_id: str) -> Channel | None:
        query = select(Channel).where(Channel.id == channel_id)
        return await self._cached(("id", channel_id), query)

    async def facebook_page(self, page_id: str) -> Channel | None:
        return await self._cached(
            ("facebook", page_id),
            select(Channel).where(Channel.kind == "facebook", Channel.external_id == page_id),
        )

    async def _cached(self, key: tuple[str, str], query: Select[Channel]) -> Channel | None:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl_s:
            async with self.db.sessions() as session:
                channel = await session.scalar(query)
            if len(self._entries) > 10_000:  # unknown ids posted at us must not grow it forever
                self._entries.clear()
            entry = self._entries[key] = (now, channel)
        return entry[1]


async def list_channels(session: AsyncSession) -> list[Channel]:
    return list((await session.scalars(select(Channel).order_by(Channel.created_at))).all())


def secret_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison of a webhook secret (Telegram's, Meta's verify token)."""
    return (
        expected is not None
        and presented is not None
        and hmac.compare_digest(presented.encode(), expected.encode())
    )


InboundCommits = GroupCommit[tuple[str, InboundMessage], bool]
ReceiptCommits = GroupCommit[tuple[str, Receipt], None]
INBOUND_KEYS = cast(Table, InboundKey.__table__)
THREADS = cast(Table, Thread.__table__)


def inbound_commits(db: Database) -> InboundCommits:
    """Webhook updates accepted together in one transaction: `submit((key, message))` answers
    False for a platform message seen before, True once it and its event are committed."""

    async def accept(batch: list[tuple[str, InboundMessage]]) -> list[bool]:
        now = utcnow()
        async with db.transaction() as session:
            new = set(
                await session.scalars(
                    insert_ignore(session, INBOUND_KEYS)
                    .values([{"key": key, "received_at": now} for key, _ in batch])
                    .returning(INBOUND_KEYS.c.key)
                )
            )
            accepted, windowed = [], []
            for key, message in batch:
                accepted.append(key in new)
                if key in new:
                    new.discard(key)  # the same update twice in one batch: once
                    emit(session, message, subject=message.channel_id)
                    if message.platform in WINDOWED_PLATFORMS:
                        windowed.append(message)
            if windowed:
                await _record_customer_activity(session, windowed)
        return accepted

    return GroupCommit(accept, name="ingest.inbound")


async def _record_customer_activity(session: AsyncSession, messages: list[InboundMessage]) -> None:
    threads = await lock_threads(
        session, [(m.channel_id, m.external_chat_id) for m in messages], create=True
    )
    for message in messages:
        thread = threads[(message.channel_id, message.external_chat_id)]
        thread.last_inbound_at = _later(thread.last_inbound_at, message.sent_at)


async def lock_threads(
    session: AsyncSession, keys: Iterable[tuple[str, str]], *, create: bool
) -> dict[tuple[str, str], Thread]:
    """The threads of `keys` (channel id, external chat id), row-locked in one order so that
    concurrent transactions wait for each other instead of deadlocking; `create` missing ones."""
    wanted = sorted(set(keys))
    if create:
        await session.execute(
            insert_ignore(session, THREADS).values(
                [{"channel_id": c, "external_chat_id": x} for c, x in wanted]
            )
        )
    found = await session.scalars(
        select(Thread)
        .where(tuple_(Thread.channel_id, Thread.external_chat_id).in_(wanted))
        .order_by(Thread.channel_id, Thread.external_chat_id)
        .with_for_update()
    )
    return {(t.channel_id, t.external_chat_id): t for t in found}


def _later(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new > current else current


def receipt_commits(db: Database) -> ReceiptCommits:
    """Delivery and read receipts of a webhook, `submit((channel_id, receipt))`: the thread's
    watermark moves forward, and our messages it reaches are delivered or read."""

    async def record(batch: list[tuple[str, Receipt]]) -> list[None]:
        async with db.transaction() as session:
            threads = await lock_threads(session, [(c, r.user_id) for c, r in batch], create=True)
            for channel_id, receipt in batch:
                thread = threads[(channel_id, receipt.user_id)]
                # Read implies delivered: a read receipt can come without its delivery.
                thread.delivered_until = _later(thread.delivered_until, receipt.watermark)
                if receipt.status == "read":
                    thread.read_until = _later(thread.read_until, receipt.watermark)
                await _advance_deliveries(session, channel_id, receipt)
        return [None] * len(batch)

    return GroupCommit(record, name="ingest.receipts")


async def _advance_deliveries(session: AsyncSession, channel_id: str, receipt: Receipt) -> None:
    behind = ("sent",) if receipt.status == "delivered" else ("sent", "delivered")
    reached = Delivery.sent_at <= receipt.watermark
    if receipt.message_ids:
        reached = or_(reached, Delivery.platform_message_id.in_(receipt.message_ids))
    deliveries = await session.scalars(
        select(Delivery).where(
            Delivery.channel_id == channel_id,
            Delivery.external_chat_id == receipt.user_id,
            Delivery.status.in_(behind),
            reached,
        )
    )
    now = utcnow()
    for delivery in deliveries:
        delivery.status, delivery.updated_at = receipt.status, now
        _emit_delivery(session, delivery)


def _reached(thread: Thread | None, sent_at: datetime) -> DeliveryStatus:
    """How far a message sent at `sent_at` got, by receipts that may have overtaken it."""
    if thread is None:
        return "sent"
    if thread.read_until is not None and thread.read_until >= sent_at:
        return "read"
    if thread.delivered_until is not None and thread.delivered_until >= sent_at:
        return "delivered"
    return "sent"


def _emit_delivery(session: AsyncSession, delivery: Delivery) -> None:
    emit(
        session,
        DeliveryUpdated(
            message_id=delivery.message_id,
            chat_id=delivery.chat_id,
            status=cast(DeliveryStatus, delivery.status),
            platform_message_id=delivery.platform_message_id,
            error=delivery.error,
        ),
        subject=delivery.chat_id,
    )


Senders = Mapping[str, ReplySender]


async def deliver_reply(db: Database, senders: Senders, reply: ChatReplyPosted) -> None:
    message = reply.message
    async with db.transaction() as session:
        done = await session.get(Delivery, message.id)
        channel = await session.get(Channel, reply.channel_id)
    if done is not None:
        return  # redelivered event: this message was already sent (or failed for good)
    sender = senders.get(channel.kind) if channel is not None else None
    if channel is None or not channel.active:
        outcome = Outcome("failed", error="The channel of this chat is no longer active.")
    elif sender is None:
        outcome = Outcome("failed", error=f"Replies to {channel.kind} channels are not supported.")
    else:
        outcome = await sender.send(channel, reply)
    async with db.transaction() as session:
        status = outcome.status
        if status == "sent" and outcome.sent_at is not None:
            thread = await session.get(
                Thread, (reply.channel_id, reply.external_chat_id), with_for_update=True
            )
            status = _reached(thread, outcome.sent_at)
        if channel is not None and outcome.channel_health not in (None, channel.status):
            await session.execute(
                update(Channel)
                .where(Channel.id == channel.id)
                .values(status=outcome.channel_health)
            )
        delivery = Delivery(
            message_id=message.id,
            chat_id=reply.chat_id,
            channel_id=reply.channel_id,
            external_chat_id=reply.external_chat_id,
            status=status,
            platform_message_id=outcome.platform_message_id,
            error=outcome.error,
            sent_at=outcome.sent_at,
            updated_at=utcnow(),
        )
        session.add(delivery)
        _emit_delivery(session, delivery)
