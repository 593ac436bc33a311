"""routing's decisions: who gets which chat, and when.

Offers in one queue are made under a row lock on the queue, so replicas never offer one chat twice
nor hand one agent's last free slot to two chats.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    AgentStatus,
    AgentStatusChanged,
    ChatAccepted,
    ChatOffered,
    ChatOpened,
    ChatQueued,
    ContactMerged,
)
from libs.common.outbox import emit
from services.routing.models import Agent, Assignment, Queue, QueueIn, QueueMember, QueueOut

OPEN_STATES = ("offered", "assigned")
NEVER = datetime.min.replace(tzinfo=UTC)  # an agent who never accepted a chat comes first

QUEUES = cast(Table, Queue.__table__)
MEMBERS = cast(Table, QueueMember.__table__)
AGENTS = cast(Table, Agent.__table__)
ASSIGNMENTS = cast(Table, Assignment.__table__)


class NotOffered(Exception):
    """The chat is not (or no longer) offered to this agent."""


async def create_queue(session: AsyncSession, data: QueueIn) -> QueueOut:
    queue = Queue(
        id=new_id(),
        name=data.name,
        accept_timeout_s=data.accept_timeout_s,
        reply_timeout_s=data.reply_timeout_s,
        capacity=data.capacity,
        created_at=utcnow(),
    )
    session.add(queue)
    agent_ids = list(dict.fromkeys(data.agent_ids))
    for agent_id in agent_ids:
        await ensure_agent(session, agent_id)
        session.add(QueueMember(queue_id=queue.id, agent_id=agent_id))
    await session.flush()
    return await queue_out(session, queue)


async def queue_out(session: AsyncSession, queue: Queue) -> QueueOut:
    members = await session.scalars(
        select(QueueMember.agent_id).where(QueueMember.queue_id == queue.id)
    )
    return QueueOut(
        id=queue.id,
        name=queue.name,
        agent_ids=list(members),
        accept_timeout_s=queue.accept_timeout_s,
        reply_timeout_s=queue.reply_timeout_s,
        capacity=queue.capacity,
    )


async def ensure_agent(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        agent = Agent(id=agent_id, status="inactive")
        session.add(agent)
        await session.flush()
    return agent


async def set_status(session: AsyncSession, agent_id: str, status: AgentStatus) -> Agent:
    agent = await ensure_agent(session, agent_id)
    previous = agent.status
    if previous != status:
        agent.status = status
        emit(
            session,
            AgentStatusChanged(agent_id=agent_id, status=status, previous=previous),
            subject=agent_id,
        )
        if status == "active":
            await offer_waiting(session, await _queues_of(session, agent_id))
    return agent


async def login(session: AsyncSession, agent_id: str) -> Agent:
    agent = await ensure_agent(session, agent_id)
    restored = agent.status_before_logout
    agent.status_before_logout = None
    if restored is not None:
        await set_status(session, agent_id, restored)  # type: ignore[arg-type]
    return agent


async def logout(session: AsyncSession, agent_id: str) -> Agent:
    agent = await ensure_agent(session, agent_id)
    agent.status_before_logout = agent.status
    return await set_status(session, agent_id, "inactive")


async def _queues_of(session: AsyncSession, agent_id: str) -> list[str]:
    rows = await session.scalars(
        select(QueueMember.queue_id).where(QueueMember.agent_id == agent_id)
    )
    return list(rows)


async def queue_chats(session: AsyncSession, batch: Sequence[ChatOpened]) -> None:
    """Put new chats in their queues (each once), then offer what waits there."""
    queued = set(
        await session.scalars(
            insert_ignore(session, ASSIGNMENTS).returning(ASSIGNMENTS.c.chat_id),
            [
                {
                    "chat_id": o.chat_id,
                    "queue_id": o.queue_id,
                    "contact_id": o.contact_id,
                    "state": "queued",
                    "queued_at": o.opened_at,
                }
                for o in batch
            ],
        )
    )
    for opened in batch:
        if opened.chat_id in queued:
            emit(
                session,
                ChatQueued(chat_id=opened.chat_id, queue_id=opened.queue_id),
                subject=opened.chat_id,
            )
    await offer_waiting(session, [o.queue_id for o in batch if o.chat_id in queued])


async def close_chat(session: AsyncSession, chat_id: str) -> None:
    assignment = await session.get(Assignment, chat_id, with_for_update=True)
    if assignment is None or assignment.state == "closed":
        return
    assignment.state = "closed"
    assignment.closed_at = utcnow()
    await session.flush()
    await offer_waiting(session, [assignment.queue_id])


async def offer_waiting(session: AsyncSession, queue_ids: Iterable[str]) -> None:
    """Offer the oldest waiting chats of these queues to the least busy available agents:
    fewest open chats, then longest since their last acceptance.

    Each queue costs the same few statements however many chats wait in it.
    """
    await session.flush()  # the Core statements below must see the ORM's pending changes
    for queue_id in sorted(set(queue_ids)):  # one lock order everywhere: no deadlocks
        capacity = await session.scalar(
            select(QUEUES.c.capacity).where(QUEUES.c.id == queue_id).with_for_update()
        )
        if capacity is None:
            continue
        waiting = (
            await session.execute(
                select(ASSIGNMENTS.c.chat_id, ASSIGNMENTS.c.contact_id)
                .where(ASSIGNMENTS.c.queue_id == queue_id, ASSIGNMENTS.c.state == "queued")
                .order_by(ASSIGNMENTS.c.queued_at)
            )
        ).all()
        if not waiting:
            continue
        free = await _available_agents(session, queue_id, capacity)
        now = utcnow()
        offers: list[ChatOffered] = []
        for chat_id, contact_id in waiting:
            if not free:
                break
            load, last_accepted, agent_id = heapq.heappop(free)
            if load + 1 < capacity:
                heapq.heappush(free, (load + 1, last_accepted, agent_id))
            offers.append(
                ChatOffered(
                    chat_id=chat_id,
                    queue_id=queue_id,
                    agent_id=agent_id,
                    contact_id=contact_id,
                    offered_at=now,
                )
            )
        if not offers:
            continue
        await session.execute(
            update(ASSIGNMENTS)
            .where(ASSIGNMENTS.c.chat_id == bindparam("offered_chat"))
            .values(state="offered", agent_id=bindparam("to_agent"), offered_at=now),
            [{"offered_chat": o.chat_id, "to_agent": o.agent_id} for o in offers],
        )
        for offer in offers:
            emit(session, offer, subject=offer.chat_id)


async def _available_agents(
    session: AsyncSession, queue_id: str, capacity: int
) -> list[tuple[int, datetime, str]]:
    """The queue's active agents with room for another chat, as a heap of
    (open chats, last acceptance, id): the least busy first."""
    load = func.count(ASSIGNMENTS.c.chat_id)
    rows = await session.execute(
        select(AGENTS.c.id, AGENTS.c.last_accepted_at, load)
        .join(MEMBERS, MEMBERS.c.agent_id == AGENTS.c.id)
        .outerjoin(
            ASSIGNMENTS,
            and_(ASSIGNMENTS.c.agent_id == AGENTS.c.id, ASSIGNMENTS.c.state.in_(OPEN_STATES)),
        )
        .where(MEMBERS.c.queue_id == queue_id, AGENTS.c.status == "active")
        .group_by(AGENTS.c.id, AGENTS.c.last_accepted_at)
        .having(load < capacity)
    )
    free = [(count, last or NEVER, agent_id) for agent_id, last, count in rows]
    heapq.heapify(free)
    return free


async def accept(session: AsyncSession, chat_id: str, agent_id: str) -> Assignment:
    assignment = await session.get(Assignment, chat_id, with_for_update=True)
    if assignment is None or assignment.agent_id != agent_id:
        raise NotOffered(chat_id)
    if assignment.state == "assigned":
        return assignment  # accepting twice is harmless
    if assignment.state != "offered":
        raise NotOffered(chat_id)
    now = utcnow()
    assignment.state, assignment.accepted_at = "assigned", now
    agent = await ensure_agent(session, agent_id)
    agent.last_accepted_at = now
    emit(
        session,
        ChatAccepted(
            chat_id=chat_id, queue_id=assignment.queue_id, agent_id=agent_id, accepted_at=now
        ),
        subject=chat_id,
    )
    return assignment


async def assignments_of(session: AsyncSession, agent_id: str, state: str) -> list[Assignment]:
    rows = await session.scalars(
        select(Assignment)
        .where(Assignment.agent_id == agent_id, Assignment.state == state)
        .order_by(Assignment.queued_at)
    )
    return list(rows)


async def assignments_of_contact(
    session: AsyncSession, contact_id: str, agent_id: str
) -> list[Assignment]:
    """The chats of a contact that were offered to, or held by, this agent (closed ones too)."""
    rows = await session.scalars(
        select(Assignment)
        .where(Assignment.agent_id == agent_id, Assignment.contact_id == contact_id)
        .order_by(Assignment.queued_at)
    )
    return list(rows)


async def repoint_contacts(session: AsyncSession, merged: ContactMerged) -> None:
    """Merged contacts' chats are the survivor's: whoever was given one may read the survivor.
    Idempotent."""
    await session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.contact_id.in_(merged.merged_ids))
        .values(contact_id=merged.survivor_id)
    )
