"""Live events for agents' consoles.

Bus events that concern an agent are appended to that agent's event log (a table, so the log is
shared by gateway replicas and survives restarts); each open WebSocket sends what is in the log
after its cursor. A commit wakes local connections at once; a short poll catches rows written by
other replicas.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import after_commit, insert_ignore, upsertable
from libs.common.envelope import Envelope, Event
from libs.common.events import (
    AgentStatusChanged,
    ChatAccepted,
    ChatCompleted,
    ChatMessageReceived,
    ChatMessageStatusChanged,
    ChatOffered,
    ChatReplyPosted,
)
from libs.common.handlers import Consumers
from services.gateway.models import AgentEvent, ChatHolder

FOR_AGENTS: tuple[type[Event], ...] = (
    ChatOffered,
    ChatAccepted,
    ChatMessageReceived,
    ChatReplyPosted,
    ChatMessageStatusChanged,
    ChatCompleted,
    AgentStatusChanged,
)


HOLDERS = cast(Table, ChatHolder.__table__)
EVENTS = cast(Table, AgentEvent.__table__)
PAGE = 500


class Hub:
    """The open connections of this process, by agent, each with a wake-up flag."""

    def __init__(self) -> None:
        self._connections: dict[str, set[asyncio.Event]] = defaultdict(set)

    def connect(self, agent_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self._connections[agent_id].add(wake)
        return wake

    def disconnect(self, agent_id: str, wake: asyncio.Event) -> None:
        self._connections[agent_id].discard(wake)
        if not self._connections[agent_id]:
            del self._connections[agent_id]

    def wake(self, agent_id: str) -> None:
        for wake in self._connections.get(agent_id, ()):
            wake.set()


async def track_holder(session: AsyncSession, event: Event) -> None:
    """Keep the chat holder table in step with routing's offers, acceptances and completions."""
    if isinstance(event, ChatOffered | ChatAccepted):
        await session.execute(
            upsertable(session, HOLDERS)
            .values(chat_id=event.chat_id, agent_id=event.agent_id)
            .on_conflict_do_update(index_elements=["chat_id"], set_={"agent_id": event.agent_id})
        )
    elif isinstance(event, ChatCompleted):
        await session.execute(delete(HOLDERS).where(HOLDERS.c.chat_id == event.chat_id))


async def recipients(session: AsyncSession, event: Event) -> set[str]:
    """The agents whose consoles must hear of `event`."""
    agent_id = getattr(event, "agent_id", None)
    if agent_id:
        return {agent_id}
    if isinstance(event, ChatMessageReceived):
        holder = await session.scalar(
            select(HOLDERS.c.agent_id).where(HOLDERS.c.chat_id == event.chat_id)
        )
        if holder is not None:
            return {holder}
    return set()


def register(consumers: Consumers, hub: Hub) -> None:
    @consumers.on(*FOR_AGENTS)
    async def push_to_agents(session: AsyncSession, event: Event, envelope: Envelope) -> None:
        await track_holder(session, event)
        for agent_id in await recipients(session, event):
            await session.execute(
                insert_ignore(session, EVENTS).values(
                    agent_id=agent_id,
                    type=envelope.type,
                    data=envelope.data,
                    source_event_id=envelope.id,
                    created_at=envelope.time,
                )
            )
            after_commit(session, functools.partial(hub.wake, agent_id))


async def latest_event_id(session: AsyncSession, agent_id: str) -> int:
    return (
        await session.scalar(
            select(func.coalesce(func.max(AgentEvent.id), 0)).where(AgentEvent.agent_id == agent_id)
        )
        or 0
    )


async def events_after(session: AsyncSession, agent_id: str, cursor: int) -> list[AgentEvent]:
    rows = await session.scalars(
        select(AgentEvent)
        .where(AgentEvent.agent_id == agent_id, AgentEvent.id > cursor)
        .order_by(AgentEvent.id)
        .limit(PAGE)
    )
    return list(rows)
