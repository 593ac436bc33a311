"""Offers: handing waiting chats to available agents under the queue's rule, and taking
offers back.

Every change to a chat's routing happens with its queue's row locked (`lock_queues`), and the
rows of the queues that share an agent with it, in one order (by id), so replicas never offer
one chat twice, never give one agent's last free slot to two chats (even from two queues), and
never deadlock. In embedded mode SQLite runs one write transaction at a time,
which gives the same guarantee.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import emit
from libs.common.events import ChatOffered, ChatOfferWithdrawn, WithdrawReason
from services.routing.models import Agent, Assignment, Offer, Queue, QueueMember

QUEUES = cast(Table, Queue.__table__)
MEMBERS = cast(Table, QueueMember.__table__)
AGENTS = cast(Table, Agent.__table__)
ASSIGNMENTS = cast(Table, Assignment.__table__)
OFFERS = cast(Table, Offer.__table__)

NEVER = datetime.min.replace(tzinfo=UTC)  # an agent who never accepted a chat comes first
# Chats read beyond the free slots, for those that may not go to the one agent free.
SLACK = 100


async def lock_queues(
    session: AsyncSession, queue_ids: Iterable[str], *, members: Iterable[str] = ()
) -> dict[str, Row[Any]]:
    """Lock these queues' rows, and those of every queue that shares an agent with them (or
    holds one of `members`), in id order (so no two transactions wait on each other), and
    return these queues by id. Call before reading or changing anything routing decides in
    them.

    An agent's load counts the offers and chats of all their queues, and offering in a queue
    reads the loads of its members: the queues that could change them meanwhile are locked too.
    """
    ids = set(queue_ids)
    if not ids:
        return {}
    agents = select(MEMBERS.c.agent_id).where(MEMBERS.c.queue_id.in_(ids))
    shared = select(MEMBERS.c.queue_id).where(
        or_(MEMBERS.c.agent_id.in_(agents), MEMBERS.c.agent_id.in_(list(members)))
    )
    rows = await session.execute(
        select(QUEUES)
        .where(or_(QUEUES.c.id.in_(ids), QUEUES.c.id.in_(shared)))
        .order_by(QUEUES.c.id)
        .with_for_update(of=QUEUES)
    )
    return {row.id: row for row in rows if row.id in ids}


@dataclass(slots=True)
class _Free:
    """An active member with room for more chats."""

    agent_id: str
    last_accepted: datetime
    load: int  # open chats: owned, plus offers standing


async def _free_agents(session: AsyncSession, queue: Row[Any]) -> list[_Free]:
    owned = (
        select(func.count())
        .where(ASSIGNMENTS.c.agent_id == AGENTS.c.id, ASSIGNMENTS.c.state == "assigned")
        .scalar_subquery()
    )
    offered = select(func.count()).where(OFFERS.c.agent_id == AGENTS.c.id).scalar_subquery()
    rows = await session.execute(
        select(AGENTS.c.id, AGENTS.c.last_accepted_at, owned + offered)
        .join(MEMBERS, MEMBERS.c.agent_id == AGENTS.c.id)
        .where(MEMBERS.c.queue_id == queue.id, AGENTS.c.status == "active")
        .order_by(AGENTS.c.id)
    )
    return [
        _Free(agent_id, last or NEVER, load)
        for agent_id, last, load in rows
        if load < queue.capacity
    ]


async def offer_waiting(
    session: AsyncSession, queues: dict[str, Row[Any]], now: datetime
) -> list[ChatOffered]:
    """Offer the oldest waiting chats of these (locked) queues to their available agents.

    Each queue costs the same few statements however many chats wait in it.
    """
    await session.flush()  # the Core statements below must see the ORM's pending changes
    made: list[ChatOffered] = []
    for queue_id in sorted(queues):
        queue = queues[queue_id]
        free = await _free_agents(session, queue)
        if not free:
            continue
        if queue.routing_rule == "everyone":
            offers = await _to_everyone(session, queue, free, now)
        else:
            offers = await _to_one(session, queue, free, now)
        if offers:
            await _record(session, queue, offers, now)
            made += offers
    return made


async def _waiting(session: AsyncSession, queue_id: str, state: str, limit: int) -> list[Any]:
    """The queue's oldest chats in this state: one ordered range of `assignments_queue_state`
    (over two states at once PostgreSQL would read and sort the whole backlog)."""
    rows = await session.execute(
        select(
            ASSIGNMENTS.c.chat_id,
            ASSIGNMENTS.c.contact_id,
            ASSIGNMENTS.c.passed_over_agent_id,
            ASSIGNMENTS.c.queued_at,
        )
        .where(ASSIGNMENTS.c.queue_id == queue_id, ASSIGNMENTS.c.state == state)
        .order_by(ASSIGNMENTS.c.queued_at, ASSIGNMENTS.c.chat_id)
        .limit(limit)
    )
    return list(rows)


def _offer(queue: Row[Any], chat_id: str, contact_id: str, agent_id: str, now: datetime) -> Any:
    expires = None
    if queue.routing_rule != "everyone":
        expires = now + timedelta(seconds=queue.accept_timeout_s)
    return ChatOffered(
        chat_id=chat_id,
        queue_id=queue.id,
        agent_id=agent_id,
        contact_id=contact_id,
        offered_at=now,
        expires_at=expires,
    )


async def _to_one(
    session: AsyncSession, queue: Row[Any], free: list[_Free], now: datetime
) -> list[ChatOffered]:
    """Least busy or round robin: each waiting chat to one agent, never to the one it just
    passed over."""
    slots = sum(queue.capacity - f.load for f in free)
    waiting = await _waiting(session, queue.id, "queued", slots + SLACK)
    pick = _least_busy(free) if queue.routing_rule == "least_busy" else _round_robin(queue, free)
    offers = []
    for chat in waiting:
        agent_id = pick(chat.passed_over_agent_id, queue.capacity)
        if agent_id is not None:
            offers.append(_offer(queue, chat.chat_id, chat.contact_id, agent_id, now))
        if len(offers) == slots:
            break
    return offers


def _least_busy(free: list[_Free]) -> Any:
    """Fewest open chats, then the longest since they last accepted one."""
    heap = [(f.load, f.last_accepted, f.agent_id) for f in free]
    heapq.heapify(heap)

    def pick(passed_over: str | None, capacity: int) -> str | None:
        skipped = heapq.heappop(heap) if heap and heap[0][2] == passed_over else None
        chosen = None
        if heap:
            load, last, chosen = heapq.heappop(heap)
            if load + 1 < capacity:
                heapq.heappush(heap, (load + 1, last, chosen))
        if skipped is not None:
            heapq.heappush(heap, skipped)
        return chosen

    return pick


def _round_robin(queue: Row[Any], free: list[_Free]) -> Any:
    """Members in id order, starting after the one offered a chat last."""
    room = {f.agent_id: queue.capacity - f.load for f in free}
    order = sorted(room)
    cursor = queue.last_offered_agent_id

    def pick(passed_over: str | None, capacity: int) -> str | None:
        nonlocal cursor
        start = next((i for i, a in enumerate(order) if cursor is None or a > cursor), 0)
        for agent_id in order[start:] + order[:start]:
            if room[agent_id] > 0 and agent_id != passed_over:
                room[agent_id] -= 1
                cursor = agent_id
                return agent_id
        return None

    return pick


async def _to_everyone(
    session: AsyncSession, queue: Row[Any], free: list[_Free], now: datetime
) -> list[ChatOffered]:
    """Every waiting chat to every available member, as far as each one's room goes: an
    agent with n free slots gets the n oldest chats not yet offered to them. Agents who
    become available later are offered what still waits."""
    # Chats already offered to an agent count in their load, so 2 x capacity chats in order
    # always hold their n oldest new ones.
    limit = 2 * queue.capacity
    both = [
        *await _waiting(session, queue.id, "queued", limit),
        *await _waiting(session, queue.id, "offered", limit),
    ]
    waiting = sorted(both, key=lambda chat: (chat.queued_at, chat.chat_id))[:limit]
    rows = await session.execute(
        select(OFFERS.c.chat_id, OFFERS.c.agent_id).where(
            OFFERS.c.chat_id.in_([w.chat_id for w in waiting])
        )
    )
    standing = {(row.chat_id, row.agent_id) for row in rows}
    offers = []
    for f in free:
        room = queue.capacity - f.load
        for chat in waiting:
            if room == 0:
                break
            if (chat.chat_id, f.agent_id) not in standing:
                offers.append(_offer(queue, chat.chat_id, chat.contact_id, f.agent_id, now))
                room -= 1
    return offers


async def _record(
    session: AsyncSession, queue: Row[Any], offers: list[ChatOffered], now: datetime
) -> None:
    await session.execute(
        OFFERS.insert(),
        [
            {
                "chat_id": o.chat_id,
                "agent_id": o.agent_id,
                "queue_id": o.queue_id,
                "offered_at": o.offered_at,
                "expires_at": o.expires_at,
            }
            for o in offers
        ],
    )
    await session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.chat_id == bindparam("offered_chat"))
        .values(state="offered", offered_at=now),
        [{"offered_chat": chat_id} for chat_id in dict.fromkeys(o.chat_id for o in offers)],
    )
    if queue.routing_rule == "round_robin":
        await session.execute(
            update(QUEUES)
            .where(QUEUES.c.id == queue.id)
            .values(last_offered_agent_id=offers[-1].agent_id)
        )
    for offer in offers:
        emit(session, offer, subject=offer.chat_id)


async def withdraw(
    session: AsyncSession,
    reason: WithdrawReason,
    now: datetime,
    *,
    chat_ids: Sequence[str] = (),
    agent_id: str | None = None,
) -> list[tuple[str, str, str]]:
    """Take back standing offers (of these chats, or of this agent); return them as (chat,
    agent, queue). Chats left with no offer wait in their queue again.
    The caller holds the queues' locks."""
    stmt = delete(OFFERS)
    if chat_ids:
        stmt = stmt.where(OFFERS.c.chat_id.in_(chat_ids))
    if agent_id is not None:
        stmt = stmt.where(OFFERS.c.agent_id == agent_id)
    rows = await session.execute(
        stmt.returning(OFFERS.c.chat_id, OFFERS.c.agent_id, OFFERS.c.queue_id)
    )
    taken = [(row.chat_id, row.agent_id, row.queue_id) for row in rows]
    for chat_id, agent, queue_id in taken:
        emit(
            session,
            ChatOfferWithdrawn(
                chat_id=chat_id, queue_id=queue_id, agent_id=agent, reason=reason, withdrawn_at=now
            ),
            subject=chat_id,
        )
    await requeue_unoffered(session, [chat_id for chat_id, _, _ in taken])
    return taken


async def requeue_unoffered(session: AsyncSession, chat_ids: Sequence[str]) -> None:
    """Offered chats whose every offer is gone wait in their queue again."""
    if not chat_ids:
        return
    still_offered = select(OFFERS.c.chat_id).where(OFFERS.c.chat_id == ASSIGNMENTS.c.chat_id)
    await session.execute(
        update(ASSIGNMENTS)
        .where(
            ASSIGNMENTS.c.chat_id.in_(set(chat_ids)),
            ASSIGNMENTS.c.state == "offered",
            ~still_offered.exists(),
        )
        .values(state="queued", offered_at=None)
    )
