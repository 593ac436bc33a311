"""routing's bus handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import Envelope
from libs.common.events import ChatCompleted, ChatOpened
from libs.common.handlers import Consumers
from services.routing import service

consumers = Consumers("routing")


@consumers.on(ChatOpened)
async def queue_chat(session: AsyncSession, event: ChatOpened, _: Envelope) -> None:
    await service.queue_chat(session, event)


@consumers.on(ChatCompleted)
async def close_chat(session: AsyncSession, event: ChatCompleted, _: Envelope) -> None:
    await service.close_chat(session, event.chat_id)
