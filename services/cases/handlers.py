"""cases' bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import Envelope
from libs.common.events import ContactMerged
from libs.common.handlers import Consumers
from services.cases import service

consumers = Consumers("cases")


@consumers.on(ContactMerged)
async def repoint_contact(session: AsyncSession, event: ContactMerged, _: Envelope) -> None:
    await service.repoint_contacts(session, event)
