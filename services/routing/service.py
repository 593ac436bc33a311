"""routing's decisions: who gets which chat, and when.

Offers in one queue are made under a row lock on the queue, so replicas never offer one chat twice
nor hand one agent's last free slot to two chats.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    AgentStatus,
    AgentStatusChanged,
    ChatAccepted,
    ChatOffered,
    ChatOpened,
    ChatQueued,
)
from libs.common.outbox import emit
from services.routing.models import Agent, Assignment, Queue, QueueIn, QueueMember, QueueOut

OPEN_STATES = ("offered", "assigned")


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


async def queue_chat(session: AsyncSession, opened: ChatOpened) -> None:
    if await session.get(Assignment, opened.chat_id) is not None:
        return
    session.add(
        Assignment(
            chat_id=opened.chat_id,
            queue_id=opened.queue_id,
            contact_id=opened.contact_id,
            state="queued",
            queued_at=opened.opened_at,
        )
    )
    await session.flush()
    emit(
        session,
        ChatQueued(chat_id=opened.chat_id, queue_id=opened.queue_id),
        subject=opened.chat_id,
    )
    await offer_waiting(session, [opened.queue_id])


async def close_chat(session: AsyncSession, chat_id: str) -> None:
    assignment = await session.get(Assignment, chat_id, with_for_update=True)
    if assignment is None or assignment.state == "closed":
        return
    assignment.state = "closed"
    assignment.closed_at = utcnow()
    await session.flush()
    await offer_waiting(session, [assignment.queue_id])


async def offer_waiting(session: AsyncSession, queue_ids: Iterable[str]) -> None:
    """Offer the oldest waiting chats of these queues to the least busy available agents."""
    for queue_id in sorted(set(queue_ids)):  # one lock order everywhere: no deadlocks
        queue = await session.get(Queue, queue_id, with_for_update=True, populate_existing=True)
        if queue is None:
            continue
        waiting = await session.scalars(
            select(Assignment)
            .where(Assignment.queue_id == queue_id, Assignment.state == "queued")
            .order_by(Assignment.queued_at)
        )
        for assignment in waiting:
            agent_id = await _least_busy_agent(session, queue)
            if agent_id is None:
                break
            now = utcnow()
            assignment.state, assignment.agent_id, assignment.offered_at = "offered", agent_id, now
            await session.flush()
            emit(
                session,
                ChatOffered(
                    chat_id=assignment.chat_id,
                    queue_id=queue_id,
                    agent_id=agent_id,
                    contact_id=assignment.contact_id,
                    offered_at=now,
                ),
                subject=assignment.chat_id,
            )


async def _least_busy_agent(session: AsyncSession, queue: Queue) -> str | None:
    load = (
        select(func.count())
        .where(Assignment.agent_id == Agent.id, Assignment.state.in_(OPEN_STATES))
        .correlate(Agent)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(Agent.id, load.label("load"))
            .join(QueueMember, and_(QueueMember.agent_id == Agent.id))
            .where(QueueMember.queue_id == queue.id, Agent.status == "active")
            .where(load < queue.capacity)
            .order_by(load, Agent.last_accepted_at.asc().nulls_first(), Agent.id)
            .limit(1)
        )
    ).first()
    return row.id if row else None


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
