"""Offers: handing waiting chats to available agents under the queue's rule, and taking
offers back.

Every change to a chat's routing happens with its queue's row locked (`lock_queues`), and the
rows of the queues that share an agent with it, in one order (by id), so replicas never offer
one chat twice, never give one agent's last free slot to two chats (even from two queues), and
never deadlock. In embedded mode SQLite runs one write transaction at a time,
which gives the same guarantee.

Locking and offering run in a `DriverTx` (decision 19): on the driver when a new chat comes off
the bus, in a session's transaction (`in_session`) when an agent or a timer acts. Their
statements are built once, and lists go as arrays (`any_of`).
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Select, Table, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import any_of, emit
from libs.common.driver import DriverTx
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


class QueueRow(NamedTuple):
    """A queue's row, read the same from a session or the driver."""

    id: str
    name: str
    routing_rule: str
    capacity: int
    accept_timeout_s: int
    reply_timeout_s: int
    reoffer_overdue: bool
    auto_complete_after_s: int | None
    max_wait_s: int | None
    on_max_wait: str | None
    overflow_queue_id: str | None
    last_offered_agent_id: str | None
    created_at: datetime


@functools.cache
def _lock_statement(postgres: bool) -> Select[Any]:
    """The rows of queues `:ids`, and of every queue sharing an agent with them or holding one
    of `:members`, locked in id order."""
    agents = select(MEMBERS.c.agent_id).where(any_of(postgres, MEMBERS.c.queue_id, "ids"))
    shared = select(MEMBERS.c.queue_id).where(
        or_(MEMBERS.c.agent_id.in_(agents), any_of(postgres, MEMBERS.c.agent_id, "members"))
    )
    return (
        select(*(QUEUES.c[name] for name in QueueRow._fields))
        .where(or_(any_of(postgres, QUEUES.c.id, "ids"), QUEUES.c.id.in_(shared)))
        .order_by(QUEUES.c.id)
        .with_for_update(of=QUEUES)
    )


async def lock_queues(
    tx: DriverTx, queue_ids: Iterable[str], *, members: Iterable[str] = ()
) -> dict[str, QueueRow]:
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
    rows = await tx.fetch(
        _lock_statement(tx.postgres), {"ids": sorted(ids), "members": sorted(set(members))}
    )
    queues = (QueueRow(*row) for row in rows)
    return {queue.id: queue for queue in queues if queue.id in ids}


@dataclass(slots=True)
class _Free:
    """An active member with room for more chats."""

    agent_id: str
    last_accepted: datetime
    load: int  # open chats: owned, plus offers standing


_OWNED = (
    select(func.count())
    .where(ASSIGNMENTS.c.agent_id == AGENTS.c.id, ASSIGNMENTS.c.state == "assigned")
    .scalar_subquery()
)
_OFFERED = select(func.count()).where(OFFERS.c.agent_id == AGENTS.c.id).scalar_subquery()
_MEMBERS_LOAD = (
    select(AGENTS.c.id, AGENTS.c.last_accepted_at, _OWNED + _OFFERED)
    .join(MEMBERS, MEMBERS.c.agent_id == AGENTS.c.id)
    .where(MEMBERS.c.queue_id == bindparam("queue_id"), AGENTS.c.status == "active")
    .order_by(AGENTS.c.id)
)


async def _free_agents(tx: DriverTx, queue: QueueRow) -> list[_Free]:
    rows = await tx.fetch(_MEMBERS_LOAD, {"queue_id": queue.id})
    return [
        _Free(agent_id, last or NEVER, load)
        for agent_id, last, load in rows
        if load < queue.capacity
    ]


async def offer_waiting(
    tx: DriverTx, queues: dict[str, QueueRow], now: datetime
) -> list[ChatOffered]:
    """Offer the oldest waiting chats of these (locked) queues to their available agents.

    Each queue costs the same few statements however many chats wait in it.
    """
    made: list[ChatOffered] = []
    for queue_id in sorted(queues):
        queue = queues[queue_id]
        free = await _free_agents(tx, queue)
        if not free:
            continue
        if queue.routing_rule == "everyone":
            offers = await _to_everyone(tx, queue, free, now)
        else:
            offers = await _to_one(tx, queue, free, now)
        if offers:
            await _record(tx, queue, offers, now)
            made += offers
    return made


class _Waiting(NamedTuple):
    chat_id: str
    contact_id: str
    passed_over_agent_id: str | None
    queued_at: datetime


# The queue's oldest chats in a state: one ordered range of `assignments_queue_state` (over two
# states at once PostgreSQL would read and sort the whole backlog).
_WAITING = (
    select(*(ASSIGNMENTS.c[name] for name in _Waiting._fields))
    .where(
        ASSIGNMENTS.c.queue_id == bindparam("queue_id"),
        ASSIGNMENTS.c.state == bindparam("state"),
    )
    .order_by(ASSIGNMENTS.c.queued_at, ASSIGNMENTS.c.chat_id)
    .limit(bindparam("limit"))
)


async def _waiting(tx: DriverTx, queue_id: str, state: str, limit: int) -> list[_Waiting]:
    rows = await tx.fetch(_WAITING, {"queue_id": queue_id, "state": state, "limit": limit})
    return [_Waiting(*row) for row in rows]


def _offer(queue: QueueRow, chat_id: str, contact_id: str, agent_id: str, now: datetime) -> Any:
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
    tx: DriverTx, queue: QueueRow, free: list[_Free], now: datetime
) -> list[ChatOffered]:
    """Least busy or round robin: each waiting chat to one agent, never to the one it just
    passed over."""
    slots = sum(queue.capacity - f.load for f in free)
    waiting = await _waiting(tx, queue.id, "queued", slots + SLACK)
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


def _round_robin(queue: QueueRow, free: list[_Free]) -> Any:
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


@functools.cache
def _standing(postgres: bool) -> Select[Any]:
    return select(OFFERS.c.chat_id, OFFERS.c.agent_id).where(
        any_of(postgres, OFFERS.c.chat_id, "chat_ids")
    )


async def _to_everyone(
    tx: DriverTx, queue: QueueRow, free: list[_Free], now: datetime
) -> list[ChatOffered]:
    """Every waiting chat to every available member, as far as each one's room goes: an
    agent with n free slots gets the n oldest chats not yet offered to them. Agents who
    become available later are offered what still waits."""
    # Chats already offered to an agent count in their load, so 2 x capacity chats in order
    # always hold their n oldest new ones.
    limit = 2 * queue.capacity
    both = [
        *await _waiting(tx, queue.id, "queued", limit),
        *await _waiting(tx, queue.id, "offered", limit),
    ]
    waiting = sorted(both, key=lambda chat: (chat.queued_at, chat.chat_id))[:limit]
    rows = await tx.fetch(_standing(tx.postgres), {"chat_ids": [w.chat_id for w in waiting]})
    standing = {(chat_id, agent_id) for chat_id, agent_id in rows}
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


_OFFER = OFFERS.insert()
_MARK_OFFERED = (
    update(ASSIGNMENTS)
    .where(ASSIGNMENTS.c.chat_id == bindparam("offered_chat"))
    .values(state="offered", offered_at=bindparam("now"))
)
_LAST_OFFERED = (
    update(QUEUES)
    .where(QUEUES.c.id == bindparam("queue_id"))
    .values(last_offered_agent_id=bindparam("agent_id"))
)


async def _record(tx: DriverTx, queue: QueueRow, offers: list[ChatOffered], now: datetime) -> None:
    await tx.execute_many(
        _OFFER,
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
    await tx.execute_many(
        _MARK_OFFERED,
        [
            {"offered_chat": chat_id, "now": now}
            for chat_id in dict.fromkeys(o.chat_id for o in offers)
        ],
    )
    if queue.routing_rule == "round_robin":
        await tx.fetch(_LAST_OFFERED, {"queue_id": queue.id, "agent_id": offers[-1].agent_id})
    for offer in offers:
        tx.emit(offer, subject=offer.chat_id)


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
