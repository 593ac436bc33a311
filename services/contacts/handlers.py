"""contacts' bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import Envelope
from libs.common.events import ChatOffered, ChatOpened, InboundMessage
from libs.common.handlers import Consumers
from services.contacts import duplicates, service

consumers = Consumers("contacts")


@consumers.on_batch(InboundMessage)
async def resolve_contact(
    session: AsyncSession, batch: list[tuple[InboundMessage, Envelope]]
) -> None:
    await service.resolve_contacts(session, [event for event, _ in batch])


@consumers.on_batch(ChatOpened, ChatOffered)
async def find_duplicates(
    session: AsyncSession, batch: list[tuple[ChatOpened | ChatOffered, Envelope]]
) -> None:
    # Its own consumer group: searching never holds up the resolving of messages.
    await duplicates.search_for_chats(session, [event for event, _ in batch])
