"""contacts' bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.driver import DriverTx
from libs.common.envelope import Envelope
from libs.common.events import (
    ChatOffered,
    ChatOpened,
    IdentityUnreachable,
    InboundMessage,
    PictureFetched,
)
from libs.common.handlers import Consumers
from services.contacts import duplicates, service

consumers = Consumers("contacts")


@consumers.on_driver_batch(InboundMessage)
async def resolve_contact(tx: DriverTx, batch: list[tuple[InboundMessage, Envelope]]) -> None:
    await service.resolve_contacts(tx, [event for event, _ in batch])


@consumers.on(PictureFetched)
async def record_picture(session: AsyncSession, event: PictureFetched, _: Envelope) -> None:
    await service.record_picture(session, event)


@consumers.on(IdentityUnreachable)
async def flag_unreachable(session: AsyncSession, event: IdentityUnreachable, _: Envelope) -> None:
    await service.flag_unreachable(session, event)


@consumers.on_driver_batch(ChatOpened, ChatOffered)
async def find_duplicates(
    tx: DriverTx, batch: list[tuple[ChatOpened | ChatOffered, Envelope]]
) -> None:
    # Its own consumer group: searching never holds up the resolving of messages.
    await duplicates.search_for_chats(tx, [event for event, _ in batch])
