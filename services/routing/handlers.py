"""routing's bus handlers."""

from __future__ import annotations

from itertools import groupby
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.driver import DriverTx
from libs.common.envelope import Envelope
from libs.common.events import (
    ChatCompleted,
    ChatCustomerWaiting,
    ChatOpened,
    ChatReplyPosted,
    ContactMerged,
)
from libs.common.handlers import Consumers
from services.routing import service

consumers = Consumers("routing")


@consumers.on_driver_batch(ChatOpened)
async def queue_chat(tx: DriverTx, batch: list[tuple[ChatOpened, Envelope]]) -> None:
    await service.queue_chats(tx, [event for event, _ in batch])


@consumers.on(ChatCompleted)
async def close_chat(session: AsyncSession, event: ChatCompleted, _: Envelope) -> None:
    await service.close_chat(session, event)


@consumers.on_batch(ChatCustomerWaiting, ChatReplyPosted)
async def note_reply(
    session: AsyncSession, batch: list[tuple[ChatCustomerWaiting | ChatReplyPosted, Envelope]]
) -> None:
    """A customer's wait for an answer starts and the owner's reply ends it: one queue for both,
    so they apply in the order chat committed them."""
    for kind, run in groupby((event for event, _ in batch), key=type):
        if kind is ChatCustomerWaiting:
            await service.note_waits(session, cast(list[ChatCustomerWaiting], list(run)))
        else:
            await service.note_replies(session, cast(list[ChatReplyPosted], list(run)))


# Took every customer message before chat announced waits (`chat.customer_waiting`).
consumers.retire("note_customer_message")


@consumers.on(ContactMerged)
async def repoint_contact(session: AsyncSession, event: ContactMerged, _: Envelope) -> None:
    await service.repoint_contacts(session, event)
