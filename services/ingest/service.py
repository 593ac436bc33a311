"""ingest's operations, shared by its HTTP views and bus handlers: customer messages and receipts
in, agents' replies out. Channels themselves are in `channels.py`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import cast

from sqlalchemy import Insert, Table, case, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.batching import GroupCommit
from libs.common.db import (
    Database,
    batch_insert,
    dialect_insert,
    emit,
    insert_ignore,
    on_postgres,
)
from libs.common.driver import DriverTx, driver_transaction
from libs.common.envelope import utcnow
from libs.common.events import (
    ChatReplyPosted,
    DeliveryStatus,
    DeliveryUpdated,
    IdentityUnreachable,
    InboundEdited,
    InboundMessage,
)
from services.ingest import fetching
from services.ingest.meta.items import Receipt
from services.ingest.models import Channel, Delivery, InboundKey, Thread
from services.ingest.sending import Outcome, ReplySender

# Platforms whose replies must fall within a window after the customer's last message.
WINDOWED_PLATFORMS = {"facebook"}

# A platform update's dedup key and what it means: a new customer message, or an edit of one.
Inbound = InboundMessage | InboundEdited
InboundCommits = GroupCommit[tuple[str, Inbound], bool]
ReceiptCommits = GroupCommit[tuple[str, Receipt], None]
INBOUND_KEYS = cast(Table, InboundKey.__table__)
THREADS = cast(Table, Thread.__table__)


def _nothing() -> None:
    pass


def inbound_commits(db: Database, files_waiting: Callable[[], None] = _nothing) -> InboundCommits:
    """Webhook updates accepted together in one transaction: `submit((key, message))` answers
    False for a platform message seen before, True once it and its event are committed, with
    its files recorded for download (`files_waiting` is called after that commit)."""

    async def accept(batch: list[tuple[str, Inbound]]) -> list[bool]:
        now = utcnow()
        async with driver_transaction(db) as tx:
            recorded = await tx.fetch(
                *batch_insert(
                    tx.postgres,
                    INBOUND_KEYS,
                    [{"key": key, "received_at": now} for key, _ in batch],
                    INBOUND_KEYS.c.key,
                    ignore_conflicts=True,
                )
            )
            new = {row[0] for row in recorded}
            accepted, windowed, files = [], [], []
            for key, message in batch:
                accepted.append(key in new)
                if key in new:
                    new.discard(key)  # the same update twice in one batch: once
                    tx.emit(message, subject=message.channel_id)
                    if not isinstance(message, InboundMessage):
                        continue  # an edit: no files, no new activity
                    if message.platform in WINDOWED_PLATFORMS:
                        windowed.append(message)
                    if message.attachments:
                        files += fetching.attachment_jobs(message.channel_id, message.attachments)
            if windowed:
                await _record_customer_activity(tx, windowed)
            if files:
                await fetching.add_jobs(tx, files)
                tx.after_commit(files_waiting)
        return accepted

    return GroupCommit(accept, name="ingest.inbound")


async def _record_customer_activity(tx: DriverTx, messages: list[InboundMessage]) -> None:
    """When each customer last wrote, as their thread keeps it (the newest message wins)."""
    latest: dict[tuple[str, str], datetime] = {}
    for m in messages:
        key = (m.channel_id, m.external_chat_id)
        latest[key] = _later(latest.get(key), m.sent_at)
    # In the order `lock_threads` takes them, so that the two never wait for each other.
    await tx.execute_many(
        _customer_wrote(tx.postgres),
        [
            {"channel_id": channel_id, "external_chat_id": chat_id, "last_inbound_at": at}
            for (channel_id, chat_id), at in sorted(latest.items())
        ],
    )


@functools.cache
def _customer_wrote(postgres: bool) -> Insert:
    upsert = dialect_insert(postgres, THREADS)
    current, wrote = THREADS.c.last_inbound_at, upsert.excluded.last_inbound_at
    return upsert.on_conflict_do_update(
        index_elements=[THREADS.c.channel_id, THREADS.c.external_chat_id],
        set_={
            "last_inbound_at": case((or_(current.is_(None), wrote > current), wrote), else_=current)
        },
    )


async def lock_threads(
    session: AsyncSession, keys: Iterable[tuple[str, str]], *, create: bool
) -> dict[tuple[str, str], Thread]:
    """The threads of `keys` (channel id, external chat id), row-locked in one order so that
    concurrent transactions wait for each other instead of deadlocking; `create` missing ones."""
    wanted = sorted(set(keys))
    if create:
        await session.execute(
            insert_ignore(on_postgres(session), THREADS),
            [{"channel_id": c, "external_chat_id": x} for c, x in wanted],
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
    outcome_time = utcnow()
    async with db.transaction() as session:
        status = outcome.status
        if status == "sent" and outcome.sent_at is not None:
            thread = await session.get(
                Thread, (reply.channel_id, reply.external_chat_id), with_for_update=True
            )
            status = _reached(thread, outcome.sent_at)
        if channel is not None:
            await _learn_channel_health(session, channel, outcome)
            if outcome.recipient_unreachable:
                emit(
                    session,
                    IdentityUnreachable(
                        channel_id=channel.id,
                        platform=reply.platform,
                        # A private chat's id is its customer's (Telegram), a PSID is both
                        # (Messenger): replies go where the customer's messages come from.
                        external_user_id=reply.external_chat_id,
                        reason=outcome.error or "",
                        detected_at=outcome_time,
                    ),
                    subject=reply.chat_id,
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
            updated_at=outcome_time,
        )
        session.add(delivery)
        _emit_delivery(session, delivery)


async def _learn_channel_health(session: AsyncSession, channel: Channel, outcome: Outcome) -> None:
    """A refused token flags the channel; an accepted one clears only that flag (a send says
    nothing about the webhook)."""
    if outcome.channel_health == "token_invalid":
        await session.execute(
            update(Channel)
            .where(Channel.id == channel.id)
            .values(status="token_invalid", status_reason=outcome.error)
        )
    elif outcome.channel_health == "ok" and channel.status == "token_invalid":
        await session.execute(
            update(Channel)
            .where(Channel.id == channel.id, Channel.status == "token_invalid")
            .values(status="ok", status_reason=None)
        )
