"""chat's bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.driver import DriverTx
from libs.common.envelope import Envelope
from libs.common.events import (
    AttachmentFetched,
    ChatAccepted,
    ChatCompletionDue,
    ChatOffered,
    ChatReplyOverdue,
    ChatTransferred,
    ContactMerged,
    ContactUpdated,
    DeliveryUpdated,
    InboundEdited,
    InboundResolved,
)
from libs.common.handlers import Consumers
from services.chat import edits, service

consumers = Consumers("chat")


@consumers.on_driver_batch(InboundResolved)
async def thread_inbound(tx: DriverTx, batch: list[tuple[InboundResolved, Envelope]]) -> None:
    await service.thread_inbound(tx, [event for event, _ in batch])


@consumers.on_driver_batch(ChatOffered)
async def record_offer(tx: DriverTx, batch: list[tuple[ChatOffered, Envelope]]) -> None:
    await service.record_offers(tx, [event for event, _ in batch])


@consumers.on(ChatAccepted)
async def record_acceptance(session: AsyncSession, event: ChatAccepted, _: Envelope) -> None:
    await service.record_acceptance(session, event)


@consumers.on(ChatTransferred)
async def record_transfer(session: AsyncSession, event: ChatTransferred, _: Envelope) -> None:
    await service.record_transfer(session, event)


@consumers.on(ChatReplyOverdue)
async def record_overdue(session: AsyncSession, event: ChatReplyOverdue, _: Envelope) -> None:
    await service.record_overdue(session, event)


@consumers.on(ChatCompletionDue)
async def complete_due(session: AsyncSession, event: ChatCompletionDue, _: Envelope) -> None:
    await service.complete_due(session, event)


@consumers.on(DeliveryUpdated)
async def record_delivery(session: AsyncSession, event: DeliveryUpdated, _: Envelope) -> None:
    await service.record_delivery(session, event)


@consumers.on(AttachmentFetched)
async def record_file(session: AsyncSession, event: AttachmentFetched, _: Envelope) -> None:
    await service.record_file(session, event)


@consumers.on(InboundEdited)
async def record_edit(session: AsyncSession, event: InboundEdited, _: Envelope) -> None:
    await edits.apply_edit(session, event)


@consumers.on(ContactMerged)
async def repoint_contact(session: AsyncSession, event: ContactMerged, _: Envelope) -> None:
    await service.repoint_contacts(session, event)


@consumers.on(ContactUpdated)
async def rename_contact(session: AsyncSession, event: ContactUpdated, _: Envelope) -> None:
    await service.rename_contact(session, event)
