"""chat's operations: threading customer messages, replies, the chat lifecycle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import UTCDateTime, insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    ChatAccepted,
    ChatCompleted,
    ChatMessageReceived,
    ChatMessageStatusChanged,
    ChatOffered,
    ChatOpened,
    ChatReplyPosted,
    ContactMerged,
    ContactUpdated,
    DeliveryUpdated,
    InboundResolved,
    MessageView,
)
from libs.common.outbox import emit
from services.chat.models import Chat, MergedContact, Message

PREVIEW = 200


class ChatClosed(Exception):
    """The chat is completed: nothing more can be posted to it."""


CHATS = cast(Table, Chat.__table__)
MESSAGES = cast(Table, Message.__table__)
MERGED = cast(Table, MergedContact.__table__)


Conversation = tuple[str, str, str]  # (contact, channel, the customer's chat on it)


def _conversation(resolved: InboundResolved) -> Conversation:
    return (resolved.contact_id, resolved.message.channel_id, resolved.message.external_chat_id)


async def _open_chats(
    session: AsyncSession, keys: set[Conversation]
) -> dict[Conversation, tuple[str, str | None]]:
    """The (id, agent id) of the open chat of each conversation that has one."""
    rows = await session.execute(
        select(
            CHATS.c.id,
            CHATS.c.agent_id,
            CHATS.c.contact_id,
            CHATS.c.channel_id,
            CHATS.c.external_chat_id,
        ).where(
            tuple_(CHATS.c.contact_id, CHATS.c.channel_id, CHATS.c.external_chat_id).in_(keys),
            CHATS.c.status != "completed",
        )
    )
    return {
        (row.contact_id, row.channel_id, row.external_chat_id): (row.id, row.agent_id)
        for row in rows
    }


async def _to_survivors(
    session: AsyncSession, batch: Sequence[InboundResolved]
) -> Sequence[InboundResolved]:
    """The batch with messages attributed to since-merged contacts given to their survivors."""
    merged = {
        row.merged_id: row
        for row in await session.execute(
            select(MERGED).where(MERGED.c.merged_id.in_({r.contact_id for r in batch}))
        )
    }
    if not merged:
        return batch
    return [
        r.model_copy(
            update={
                "contact_id": merged[r.contact_id].survivor_id,
                "contact_name": merged[r.contact_id].survivor_name,
            }
        )
        if r.contact_id in merged
        else r
        for r in batch
    ]


async def thread_inbound(session: AsyncSession, batch: Sequence[InboundResolved]) -> None:
    """Append each message to its contact's open chat on that channel, or open a new chat.

    A batch costs a handful of Core statements whatever its size: this runs for every customer
    message. Messages of one customer within a batch go to one chat, in arrival order.
    """
    batch = await _to_survivors(session, batch)
    keys = {_conversation(r) for r in batch}
    chats = await _open_chats(session, keys)
    latest = {_conversation(r): r for r in batch}  # last one wins
    opened: dict[Conversation, ChatOpened] = {}
    for first in batch:  # a customer's first message in the batch opens their chat
        key = _conversation(first)
        if key not in chats and key not in opened:
            opened[key] = ChatOpened(
                chat_id=new_id(),
                contact_id=first.contact_id,
                channel_id=first.message.channel_id,
                queue_id=first.message.queue_id,
                platform=first.message.platform,
                opened_at=first.message.received_at,
            )
    if opened:
        claimed = set(
            await session.scalars(
                insert_ignore(session, CHATS).returning(CHATS.c.id),
                [
                    {
                        "id": o.chat_id,
                        "contact_id": o.contact_id,
                        "contact_name": latest[key].contact_name,
                        "channel_id": o.channel_id,
                        "queue_id": o.queue_id,
                        "platform": o.platform,
                        "external_chat_id": latest[key].message.external_chat_id,
                        "status": "new",
                        "opened_at": o.opened_at,
                        "last_message_at": latest[key].message.received_at,
                        "last_message_preview": _preview(latest[key]),
                    }
                    for key, o in opened.items()
                ],
            )
        )
        lost = {key for key, o in opened.items() if o.chat_id not in claimed}
        if lost:
            # Another replica opened these chats at the same moment: join them.
            chats |= await _open_chats(session, lost)
            opened = {key: o for key, o in opened.items() if key not in lost}
        for o in opened.values():
            emit(session, o, subject=o.chat_id)

    views: list[tuple[MessageView, str | None, str | None]] = []
    for resolved in batch:
        key = _conversation(resolved)
        if key in opened:
            chat_id, agent_id = opened[key].chat_id, None
        else:
            chat_id, agent_id = chats[key]
        inbound = resolved.message
        view = MessageView(
            id=new_id(),
            chat_id=chat_id,
            direction="in",
            text=inbound.text,
            attachments=inbound.attachments,
            created_at=inbound.received_at,
        )
        views.append((view, agent_id, inbound.external_message_id))
    await session.execute(
        insert(MESSAGES),
        [
            {
                "id": view.id,
                "chat_id": view.chat_id,
                "direction": "in",
                "text": view.text,
                "attachments": [a.model_dump(mode="json") for a in view.attachments],
                "created_at": view.created_at,
                "external_message_id": external_id,
            }
            for view, _, external_id in views
        ],
    )
    continued = [(chats[key][0], r) for key, r in latest.items() if key not in opened]
    if continued:
        at = bindparam("at", type_=UTCDateTime)
        await session.execute(
            update(CHATS)
            .where(CHATS.c.id == bindparam("chat_id"))
            .values(
                last_message_at=case(
                    (CHATS.c.last_message_at < at, at), else_=CHATS.c.last_message_at
                ),
                last_message_preview=bindparam("preview"),
            ),
            [
                {"chat_id": chat_id, "at": r.message.received_at, "preview": _preview(r)}
                for chat_id, r in continued
            ],
        )
    for view, agent_id, _ in views:
        emit(
            session,
            ChatMessageReceived(chat_id=view.chat_id, agent_id=agent_id, message=view),
            subject=view.chat_id,
        )


def _preview(resolved: InboundResolved) -> str:
    return (resolved.message.text or "")[:PREVIEW]


async def record_offers(session: AsyncSession, offers: Sequence[ChatOffered]) -> None:
    """Mirror routing's offers: a new chat shows whom it is offered to."""
    await session.execute(
        update(CHATS)
        .where(CHATS.c.id == bindparam("offered_chat"), CHATS.c.status == "new")
        .values(agent_id=bindparam("to_agent")),
        [{"offered_chat": o.chat_id, "to_agent": o.agent_id} for o in offers],
    )


async def record_acceptance(session: AsyncSession, accepted: ChatAccepted) -> None:
    await session.execute(
        update(CHATS)
        .where(CHATS.c.id == accepted.chat_id, CHATS.c.status != "completed")
        .values(status="active", agent_id=accepted.agent_id, accepted_at=accepted.accepted_at)
    )


async def post_reply(session: AsyncSession, chat: Chat, agent_id: str, text: str) -> Message:
    if chat.status == "completed":
        raise ChatClosed(chat.id)
    now = utcnow()
    message = Message(
        id=new_id(),
        chat_id=chat.id,
        direction="out",
        text=text,
        attachments=[],
        created_at=now,
        author_agent_id=agent_id,
        delivery_status="pending",
    )
    session.add(message)
    chat.last_message_at = now
    chat.last_message_preview = text[:PREVIEW]
    await session.flush()
    emit(
        session,
        ChatReplyPosted(
            chat_id=chat.id,
            agent_id=agent_id,
            channel_id=chat.channel_id,
            platform=chat.platform,
            external_chat_id=chat.external_chat_id,
            message=message.view(),
        ),
        subject=chat.id,
    )
    return message


# How far an outgoing message has got; `failed` ends a message that never got anywhere.
DELIVERY_PROGRESS = {"pending": 0, "sent": 1, "failed": 1, "delivered": 2, "read": 3}


async def record_delivery(session: AsyncSession, update: DeliveryUpdated) -> None:
    message = await session.get(Message, update.message_id)
    if message is None:
        return
    # Receipts can overtake each other on the bus (a retried handler): never step back.
    if DELIVERY_PROGRESS[update.status] < DELIVERY_PROGRESS.get(message.delivery_status or "", 0):
        return
    message.delivery_status = update.status
    message.delivery_error = update.error
    chat = await session.get(Chat, message.chat_id)
    emit(
        session,
        ChatMessageStatusChanged(
            chat_id=message.chat_id,
            agent_id=chat.agent_id if chat else None,
            message=message.view(),
        ),
        subject=message.chat_id,
    )


async def complete(session: AsyncSession, chat: Chat, by_agent: str | None) -> bool:
    """Complete the chat; False if it already was."""
    if chat.status == "completed":
        return False
    chat.status = "completed"
    chat.completed_at = utcnow()
    emit(
        session,
        ChatCompleted(
            chat_id=chat.id,
            agent_id=chat.agent_id,
            completed_by=by_agent,
            completed_at=chat.completed_at,
        ),
        subject=chat.id,
    )
    return True


async def chats_by_ids(session: AsyncSession, ids: Sequence[str]) -> list[Chat]:
    if not ids:
        return []
    rows = await session.scalars(
        select(Chat).where(Chat.id.in_(ids)).order_by(Chat.last_message_at.desc())
    )
    return list(rows)


async def messages_of(session: AsyncSession, chat_id: str) -> list[Message]:
    rows = await session.scalars(
        select(Message).where(Message.chat_id == chat_id).order_by(Message.created_at, Message.id)
    )
    return list(rows)


async def repoint_contacts(session: AsyncSession, merged: ContactMerged) -> None:
    """Merged contacts' chats become the survivor's; later messages attributed to a merged
    contact will be too. Idempotent: a second run finds nothing left to move."""
    gone = merged.merged_ids
    await session.execute(
        insert_ignore(session, MERGED),
        [
            {
                "merged_id": m,
                "survivor_id": merged.survivor_id,
                "survivor_name": merged.survivor_name,
            }
            for m in gone
        ],
    )
    # Contacts merged into these before now lead to the survivor too.
    await session.execute(
        update(MERGED)
        .where(MERGED.c.survivor_id.in_(gone))
        .values(survivor_id=merged.survivor_id, survivor_name=merged.survivor_name)
    )
    # A message of a moved identity may have opened a chat on the survivor before this event
    # arrived: the merged contact's open chat of that conversation is then completed, as the
    # customer goes on in the newer one.
    theirs = CHATS.alias("survivor_chats")
    survivors = (
        select(theirs.c.id)
        .where(
            theirs.c.contact_id == merged.survivor_id,
            theirs.c.channel_id == Chat.channel_id,
            theirs.c.external_chat_id == Chat.external_chat_id,
            theirs.c.status != "completed",
        )
        .exists()
    )
    for clash in await session.scalars(
        select(Chat).where(Chat.contact_id.in_(gone), Chat.status != "completed", survivors)
    ):
        await complete(session, clash, None)
    await session.flush()
    await session.execute(
        update(CHATS)
        .where(CHATS.c.contact_id.in_([*gone, merged.survivor_id]))
        .values(contact_id=merged.survivor_id, contact_name=merged.survivor_name)
    )


async def rename_contact(session: AsyncSession, updated: ContactUpdated) -> None:
    """Chats show their contact's current name."""
    await session.execute(
        update(CHATS)
        .where(CHATS.c.contact_id == updated.contact_id, CHATS.c.contact_name != updated.name)
        .values(contact_name=updated.name)
    )
    await session.execute(
        update(MERGED)
        .where(MERGED.c.survivor_id == updated.contact_id)
        .values(survivor_name=updated.name)
    )


async def chats_of_contact(
    session: AsyncSession, contact_id: str, *, before: datetime | None, limit: int
) -> list[Chat]:
    """A contact's chats, newest first (`before`: opened before that, for the next page)."""
    query = select(Chat).where(Chat.contact_id == contact_id)
    if before is not None:
        query = query.where(Chat.opened_at < before)
    rows = await session.scalars(query.order_by(Chat.opened_at.desc(), Chat.id).limit(limit))
    return list(rows)


async def messages_of_chats(
    session: AsyncSession, chat_ids: Sequence[str]
) -> dict[str, list[Message]]:
    """Each chat's messages, in the order they were written."""
    out: dict[str, list[Message]] = {chat_id: [] for chat_id in chat_ids}
    if chat_ids:
        for message in await session.scalars(
            select(Message)
            .where(Message.chat_id.in_(chat_ids))
            .order_by(Message.created_at, Message.id)
        ):
            out[message.chat_id].append(message)
    return out
