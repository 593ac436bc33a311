"""routing's bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import Envelope
from libs.common.events import ChatCompleted, ChatOpened, ContactMerged
from libs.common.handlers import Consumers
from services.routing import service

consumers = Consumers("routing")


@consumers.on_batch(ChatOpened)
async def queue_chat(session: AsyncSession, batch: list[tuple[ChatOpened, Envelope]]) -> None:
    await service.queue_chats(session, [event for event, _ in batch])


@consumers.on(ChatCompleted)
async def close_chat(session: AsyncSession, event: ChatCompleted, _: Envelope) -> None:
    await service.close_chat(session, event.chat_id)


@consumers.on(ContactMerged)
async def repoint_contact(session: AsyncSession, event: ContactMerged, _: Envelope) -> None:
    await service.repoint_contacts(session, event)
