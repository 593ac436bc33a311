"""chat's operations: threading customer messages, replies, the chat lifecycle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    ChatAccepted,
    ChatCompleted,
    ChatMessageReceived,
    ChatMessageStatusChanged,
    ChatOffered,
    ChatOpened,
    ChatReplyPosted,
    DeliveryUpdated,
    InboundResolved,
    MessageView,
)
from libs.common.outbox import emit
from services.chat.models import Chat, Message

PREVIEW = 200


class ChatClosed(Exception):
    """The chat is completed: nothing more can be posted to it."""


CHATS = cast(Table, Chat.__table__)
MESSAGES = cast(Table, Message.__table__)


async def _open_chat(
    session: AsyncSession, contact_id: str, channel_id: str
) -> Row[Any, Any] | None:
    return (
        await session.execute(
            select(CHATS.c.id, CHATS.c.agent_id).where(
                CHATS.c.contact_id == contact_id,
                CHATS.c.channel_id == channel_id,
                CHATS.c.status != "completed",
            )
        )
    ).first()


async def thread_inbound(session: AsyncSession, resolved: InboundResolved) -> None:
    """Append the message to the contact's open chat on that channel, or open a new chat.

    Core statements rather than the ORM: this runs for every customer message.
    """
    inbound = resolved.message
    at, preview = inbound.received_at, (inbound.text or "")[:PREVIEW]
    chat = await _open_chat(session, resolved.contact_id, inbound.channel_id)
    opened = None
    if chat is None:
        opened = ChatOpened(
            chat_id=new_id(),
            contact_id=resolved.contact_id,
            channel_id=inbound.channel_id,
            queue_id=inbound.queue_id,
            platform=inbound.platform,
            opened_at=at,
        )
        try:
            async with session.begin_nested():
                await session.execute(
                    insert(CHATS).values(
                        id=opened.chat_id,
                        contact_id=opened.contact_id,
                        contact_name=resolved.contact_name,
                        channel_id=opened.channel_id,
                        queue_id=opened.queue_id,
                        platform=opened.platform,
                        external_chat_id=inbound.external_chat_id,
                        status="new",
                        opened_at=at,
                        last_message_at=at,
                        last_message_preview=preview,
                    )
                )
        except IntegrityError:
            # Another message of this customer opened the chat at the same moment: join it.
            opened = None
            chat = await _open_chat(session, resolved.contact_id, inbound.channel_id)
            assert chat is not None
    if opened is not None:
        chat_id, agent_id = opened.chat_id, None
    else:
        assert chat is not None
        chat_id, agent_id = chat.id, chat.agent_id
    view = MessageView(
        id=new_id(),
        chat_id=chat_id,
        direction="in",
        text=inbound.text,
        attachments=inbound.attachments,
        created_at=at,
    )
    await session.execute(
        insert(MESSAGES).values(
            id=view.id,
            chat_id=chat_id,
            direction="in",
            text=view.text,
            attachments=[a.model_dump(mode="json") for a in view.attachments],
            created_at=at,
            external_message_id=inbound.external_message_id,
        )
    )
    if opened is None:
        await session.execute(
            update(CHATS)
            .where(CHATS.c.id == chat_id)
            .values(
                last_message_at=case(
                    (CHATS.c.last_message_at < at, at), else_=CHATS.c.last_message_at
                ),
                last_message_preview=preview,
            )
        )
    else:
        emit(session, opened, subject=chat_id)
    emit(
        session,
        ChatMessageReceived(chat_id=chat_id, agent_id=agent_id, message=view),
        subject=chat_id,
    )


async def record_offer(session: AsyncSession, offer: ChatOffered) -> None:
    chat = await session.get(Chat, offer.chat_id)
    if chat is not None and chat.status == "new":
        chat.agent_id = offer.agent_id


async def record_acceptance(session: AsyncSession, accepted: ChatAccepted) -> None:
    chat = await session.get(Chat, accepted.chat_id)
    if chat is not None and chat.status != "completed":
        chat.status = "active"
        chat.agent_id = accepted.agent_id
        chat.accepted_at = accepted.accepted_at


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
