"""routing's bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import Envelope
from libs.common.events import (
    ChatCompleted,
    ChatMessageReceived,
    ChatOpened,
    ChatReplyPosted,
    ContactMerged,
)
from libs.common.handlers import Consumers
from services.routing import service

consumers = Consumers("routing")


@consumers.on_batch(ChatOpened)
async def queue_chat(session: AsyncSession, batch: list[tuple[ChatOpened, Envelope]]) -> None:
    await service.queue_chats(session, [event for event, _ in batch])


@consumers.on(ChatCompleted)
async def close_chat(session: AsyncSession, event: ChatCompleted, _: Envelope) -> None:
    await service.close_chat(session, event)


@consumers.on_batch(ChatMessageReceived)
async def note_customer_message(
    session: AsyncSession, batch: list[tuple[ChatMessageReceived, Envelope]]
) -> None:
    await service.note_customer_messages(session, [event for event, _ in batch])


@consumers.on_batch(ChatReplyPosted)
async def note_reply(session: AsyncSession, batch: list[tuple[ChatReplyPosted, Envelope]]) -> None:
    await service.note_replies(session, [event for event, _ in batch])


@consumers.on(ContactMerged)
async def repoint_contact(session: AsyncSession, event: ContactMerged, _: Envelope) -> None:
    await service.repoint_contacts(session, event)
