"""routing's decisions: queues, agents' status, and where each chat goes and when.

Every function that changes a chat's routing first locks the queues involved (offers.py says
why); the clock (clock.py) fires the timers through the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import batch_insert, emit, insert_ignore, on_postgres
from libs.common.driver import DriverTx, in_session
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    AgentStatus,
    AgentStatusChanged,
    ChatAccepted,
    ChatCompleted,
    ChatCompletionDue,
    ChatCustomerWaiting,
    ChatOfferExpired,
    ChatOpened,
    ChatQueued,
    ChatReplyOverdue,
    ChatReplyPosted,
    ChatTransferred,
    ContactMerged,
    StatusReason,
)
from services.routing.models import (
    Agent,
    Assignment,
    AssignmentOut,
    Offer,
    Queue,
    QueueIn,
    QueueOut,
    QueuePatch,
    QueueSettings,
)
from services.routing.offers import (
    AGENTS,
    ASSIGNMENTS,
    MEMBERS,
    OFFERS,
    QUEUES,
    QueueRow,
    lock_queues,
    offer_waiting,
    requeue_unoffered,
    withdraw,
)

# Each timer fires on due rows in state(s):
TIMERS = {
    "reply_due_at": ("assigned",),
    "complete_due_at": ("assigned",),
    "wait_due_at": ("queued", "offered"),
}

OPEN = ("queued", "offered", "assigned")


class NotOffered(Exception):
    """The chat is not (or no longer) offered to this agent."""


class CannotTransfer(Exception):
    """The chat cannot go there (the reason is the message)."""


class UnknownQueue(Exception):
    pass


# --- queues ------------------------------------------------------------------------------


def _settings_row(data: QueueSettings) -> dict[str, Any]:
    return data.model_dump(include=set(QueueSettings.model_fields))


async def check_overflow(session: AsyncSession, data: QueueSettings, queue_id: str) -> None:
    target = data.overflow_queue_id
    if target is not None and (target == queue_id or await session.get(Queue, target) is None):
        raise UnknownQueue(target)


async def create_queue(session: AsyncSession, data: QueueIn) -> QueueOut:
    queue_id = new_id()
    await check_overflow(session, data, queue_id)
    session.add(Queue(id=queue_id, name=data.name, created_at=utcnow(), **_settings_row(data)))
    await session.flush()
    await _set_members(session, queue_id, data.agent_ids)
    return await queue_out(session, queue_id)


async def update_queue(session: AsyncSession, queue_id: str, patch: QueuePatch) -> QueueOut:
    """Change a queue's options or members; raises ValidationError (from the merged whole) or
    UnknownQueue. Chats waiting in it are offered again under the new terms."""
    # The new members' other queues too: their loads are read when the queue offers.
    queues = await lock_queues(in_session(session), [queue_id], members=patch.agent_ids or ())
    if queue_id not in queues:
        raise UnknownQueue(queue_id)
    current = await queue_out(session, queue_id)
    merged = QueueIn.model_validate(
        {**current.model_dump(exclude={"id"}), **patch.model_dump(exclude_unset=True)}
    )
    await check_overflow(session, merged, queue_id)
    await session.execute(
        update(QUEUES)
        .where(QUEUES.c.id == queue_id)
        .values(name=merged.name, **_settings_row(merged))
    )
    if patch.agent_ids is not None:
        await _set_members(session, queue_id, merged.agent_ids)
    now = utcnow()
    # Offers to agents who left the queue are taken back.
    members = select(MEMBERS.c.agent_id).where(MEMBERS.c.queue_id == queue_id)
    gone = await session.execute(
        select(OFFERS.c.chat_id, OFFERS.c.agent_id).where(
            OFFERS.c.queue_id == queue_id, OFFERS.c.agent_id.not_in(members)
        )
    )
    for chat_id, agent_id in gone:
        await withdraw(session, "agent_unavailable", now, chat_ids=[chat_id], agent_id=agent_id)
    tx = in_session(session)
    await offer_waiting(tx, await lock_queues(tx, [queue_id]), now)
    return await queue_out(session, queue_id)


async def _set_members(session: AsyncSession, queue_id: str, agent_ids: Sequence[str]) -> None:
    wanted = list(dict.fromkeys(agent_ids))
    await session.execute(
        MEMBERS.delete().where(MEMBERS.c.queue_id == queue_id, MEMBERS.c.agent_id.not_in(wanted))
    )
    for agent_id in wanted:
        await ensure_agent(session, agent_id)
    if wanted:
        await session.execute(
            insert_ignore(on_postgres(session), MEMBERS),
            [{"queue_id": queue_id, "agent_id": agent_id} for agent_id in wanted],
        )


async def queue_out(session: AsyncSession, queue_id: str) -> QueueOut:
    queue = (await session.execute(select(QUEUES).where(QUEUES.c.id == queue_id))).one()
    members = await session.scalars(
        select(MEMBERS.c.agent_id)
        .where(MEMBERS.c.queue_id == queue_id)
        .order_by(MEMBERS.c.agent_id)
    )
    return QueueOut.model_validate({**queue._mapping, "agent_ids": list(members)})


# --- agents ------------------------------------------------------------------------------


async def ensure_agent(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        await session.execute(
            insert_ignore(on_postgres(session), AGENTS), [{"id": agent_id, "status": "inactive"}]
        )
        agent = await session.get(Agent, agent_id)
    assert agent is not None
    return agent


async def _lock_agent(session: AsyncSession, agent_id: str) -> tuple[Agent, dict[str, QueueRow]]:
    """The agent, after locking every queue their status change can touch: their queues, and
    those of the chats offered to them."""
    await ensure_agent(session, agent_id)
    queue_ids = set(
        await session.scalars(select(MEMBERS.c.queue_id).where(MEMBERS.c.agent_id == agent_id))
    )
    queue_ids |= set(
        await session.scalars(select(OFFERS.c.queue_id).where(OFFERS.c.agent_id == agent_id))
    )
    queues = await lock_queues(in_session(session), queue_ids)
    agent = await session.get(Agent, agent_id, populate_existing=True, with_for_update=True)
    assert agent is not None
    return agent, queues


async def set_status(
    session: AsyncSession, agent_id: str, status: AgentStatus, reason: StatusReason = "agent"
) -> Agent:
    agent, queues = await _lock_agent(session, agent_id)
    await _change_status(session, agent, queues, status, reason)
    return agent


async def _change_status(
    session: AsyncSession,
    agent: Agent,
    queues: dict[str, QueueRow],
    status: AgentStatus,
    reason: StatusReason,
) -> None:
    previous = agent.status
    if previous == status:
        return
    agent.status = status
    now = utcnow()
    emit(
        session,
        AgentStatusChanged(agent_id=agent.id, status=status, previous=previous, reason=reason),
        subject=agent.id,
    )
    if status == "inactive":
        await withdraw(session, "agent_unavailable", now, agent_id=agent.id)
    await offer_waiting(in_session(session), queues, now)


async def login(session: AsyncSession, agent_id: str) -> Agent:
    agent, queues = await _lock_agent(session, agent_id)
    await _come_back(session, agent, queues, "login")
    return agent


async def _come_back(
    session: AsyncSession, agent: Agent, queues: dict[str, QueueRow], reason: StatusReason
) -> None:
    restored = agent.status_before_logout
    agent.status_before_logout = agent.disconnected_at = agent.console_seen_at = None
    if restored is not None:
        await _change_status(session, agent, queues, restored, reason)  # type: ignore[arg-type]


async def logout(session: AsyncSession, agent_id: str) -> Agent:
    agent, queues = await _lock_agent(session, agent_id)
    await _leave(session, agent, queues, "logout")
    agent.disconnected_at = None
    return agent


async def _leave(
    session: AsyncSession, agent: Agent, queues: dict[str, QueueRow], reason: StatusReason
) -> None:
    agent.status_before_logout = agent.status
    agent.console_seen_at = None
    await _change_status(session, agent, queues, "inactive", reason)


async def consoles_seen(session: AsyncSession, agent_ids: Sequence[str]) -> list[str]:
    """Gateways report the agents with a console open. An agent who was timed out comes back
    as after a login; returns those agents."""
    if not agent_ids:
        return []
    await session.execute(
        update(AGENTS).where(AGENTS.c.id.in_(agent_ids)).values(console_seen_at=utcnow())
    )
    return list(
        await session.scalars(
            select(AGENTS.c.id).where(
                AGENTS.c.id.in_(agent_ids), AGENTS.c.disconnected_at.is_not(None)
            )
        )
    )


async def reconnect(session: AsyncSession, agent_id: str) -> None:
    agent, queues = await _lock_agent(session, agent_id)
    if agent.disconnected_at is not None:
        await _come_back(session, agent, queues, "reconnected")
        agent.console_seen_at = utcnow()


async def disconnect(session: AsyncSession, agent_id: str, seen_before: datetime) -> None:
    """Every console of the agent has been gone since before `seen_before`: a logout."""
    agent, queues = await _lock_agent(session, agent_id)
    seen = agent.console_seen_at
    if agent.status != "active" or seen is None or seen >= seen_before:
        return  # a console came back meanwhile
    await _leave(session, agent, queues, "disconnected")
    agent.disconnected_at = utcnow()


async def agents(session: AsyncSession) -> list[Agent]:
    return list(await session.scalars(select(Agent).order_by(Agent.id)))


# --- chats -------------------------------------------------------------------------------


async def queue_chats(tx: DriverTx, batch: Sequence[ChatOpened]) -> None:
    """Put new chats in their queues (each once), then offer what waits there."""
    queues = await lock_queues(tx, [o.queue_id for o in batch])
    now = utcnow()
    inserted = await tx.fetch(
        *batch_insert(
            tx.postgres,
            ASSIGNMENTS,
            [
                {
                    "chat_id": o.chat_id,
                    "queue_id": o.queue_id,
                    "contact_id": o.contact_id,
                    "state": "queued",
                    "queued_at": o.opened_at,
                    # A chat opens with a customer's message.
                    "awaiting_reply_since": o.opened_at,
                    "wait_due_at": _wait_due(queues.get(o.queue_id), now),
                }
                for o in batch
            ],
            ASSIGNMENTS.c.chat_id,
            ignore_conflicts=True,
        )
    )
    queued = {chat_id for (chat_id,) in inserted}
    for opened in batch:
        if opened.chat_id in queued:
            tx.emit(
                ChatQueued(chat_id=opened.chat_id, queue_id=opened.queue_id),
                subject=opened.chat_id,
            )
    await offer_waiting(tx, {q: queues[q] for q in {o.queue_id for o in batch} if q in queues}, now)


def _wait_due(queue: QueueRow | None, now: datetime) -> datetime | None:
    if queue is None or queue.max_wait_s is None:
        return None
    return now + timedelta(seconds=queue.max_wait_s)


def _reply_due(queue: QueueRow, waiting_since: datetime | None, now: datetime) -> datetime | None:
    """When an owner who has just taken the chat must have answered."""
    if waiting_since is None:
        return None
    return max(waiting_since, now) + timedelta(seconds=queue.reply_timeout_s)


async def locked_chat(
    session: AsyncSession, chat_id: str, *also: str
) -> tuple[Assignment, dict[str, QueueRow]] | None:
    """The chat's assignment, with its queue (and the queues `also` names) locked."""
    while True:
        queue_id = await session.scalar(
            select(ASSIGNMENTS.c.queue_id).where(ASSIGNMENTS.c.chat_id == chat_id)
        )
        if queue_id is None:
            return None
        queues = await lock_queues(in_session(session), [queue_id, *also])
        assignment = await session.get(Assignment, chat_id, populate_existing=True)
        assert assignment is not None
        if assignment.queue_id == queue_id:
            return assignment, queues
        # Transferred between our two reads: lock its new queue instead.


async def close_chat(session: AsyncSession, completed: ChatCompleted) -> None:
    found = await locked_chat(session, completed.chat_id)
    if found is None:
        return
    assignment, queues = found
    if assignment.state == "closed":
        return
    now = utcnow()
    await withdraw(session, "completed", now, chat_ids=[assignment.chat_id])
    _close(assignment, completed.completed_at)
    await offer_waiting(in_session(session), queues, now)


def _close(assignment: Assignment, at: datetime) -> None:
    assignment.state, assignment.closed_at = "closed", at
    assignment.reply_due_at = assignment.complete_due_at = assignment.wait_due_at = None


async def accept(session: AsyncSession, chat_id: str, agent_id: str) -> Assignment:
    found = await locked_chat(session, chat_id)
    if found is None:
        raise NotOffered(chat_id)
    assignment, queues = found
    if assignment.state == "assigned" and assignment.agent_id == agent_id:
        return assignment  # accepting twice is harmless
    offered = await session.scalar(
        select(OFFERS.c.chat_id).where(OFFERS.c.chat_id == chat_id, OFFERS.c.agent_id == agent_id)
    )
    if offered is None or assignment.state != "offered":
        raise NotOffered(chat_id)
    now = utcnow()
    queue = queues[assignment.queue_id]
    await session.execute(
        OFFERS.delete().where(OFFERS.c.chat_id == chat_id, OFFERS.c.agent_id == agent_id)
    )
    others = await withdraw(session, "taken", now, chat_ids=[chat_id])
    _own(assignment, agent_id, queue, now)
    await session.execute(
        update(AGENTS).where(AGENTS.c.id == agent_id).values(last_accepted_at=now)
    )
    emit(
        session,
        ChatAccepted(
            chat_id=chat_id, queue_id=assignment.queue_id, agent_id=agent_id, accepted_at=now
        ),
        subject=chat_id,
    )
    if others:  # their slots are free again
        await offer_waiting(in_session(session), queues, now)
    return assignment


def _own(assignment: Assignment, agent_id: str, queue: QueueRow, now: datetime) -> None:
    assignment.state, assignment.agent_id, assignment.accepted_at = "assigned", agent_id, now
    assignment.passed_over_agent_id = assignment.wait_due_at = None
    assignment.reply_due_at = _reply_due(queue, assignment.awaiting_reply_since, now)


async def transfer(
    session: AsyncSession,
    chat_id: str,
    by: str | None,
    *,
    to_agent: str | None = None,
    to_queue: str | None = None,
) -> Assignment:
    """Move a chat to an agent, who owns it at once, or to a queue, where it is offered (not
    straight back to its owner). The caller checked who may do it."""
    found = await locked_chat(session, chat_id, *([to_queue] if to_queue else []))
    if found is None:
        raise CannotTransfer("the chat is not known to routing yet")
    assignment, queues = found
    if to_queue is not None and to_queue not in queues:
        raise UnknownQueue(to_queue)
    if assignment.state == "closed":
        raise CannotTransfer("the chat is completed")
    if to_agent is not None and to_agent == assignment.agent_id:
        raise CannotTransfer("the chat is already theirs")
    now = utcnow()
    await withdraw(session, "transferred", now, chat_ids=[chat_id])
    from_agent, from_queue = assignment.agent_id, assignment.queue_id
    if to_agent is not None:
        await ensure_agent(session, to_agent)
        _own(assignment, to_agent, queues[from_queue], now)
    else:
        assert to_queue is not None
        _requeue(assignment, to_queue, passed_over=from_agent)
        assignment.wait_due_at = _wait_due(queues[to_queue], now)
    emit(
        session,
        ChatTransferred(
            chat_id=chat_id,
            from_agent_id=from_agent,
            from_queue_id=from_queue,
            to_agent_id=to_agent,
            to_queue_id=assignment.queue_id,
            by=by,
            transferred_at=now,
        ),
        subject=chat_id,
    )
    if to_queue is not None:
        emit(session, ChatQueued(chat_id=chat_id, queue_id=to_queue), subject=chat_id)
    await offer_waiting(in_session(session), queues, now)
    return assignment


def _requeue(assignment: Assignment, queue_id: str, passed_over: str | None) -> None:
    assignment.queue_id, assignment.state = queue_id, "queued"
    assignment.agent_id = assignment.accepted_at = assignment.offered_at = None
    assignment.passed_over_agent_id = passed_over
    assignment.reply_due_at = assignment.complete_due_at = None


async def note_waits(session: AsyncSession, waits: Sequence[ChatCustomerWaiting]) -> None:
    """A customer's wait for an answer started: the owner's reply timer runs, and the chat is
    not idle."""
    if not waits:
        return
    timeouts = await _queue_settings(session, {w.chat_id for w in waits})
    rows = []
    for w in waits:
        if w.chat_id in timeouts:
            reply_timeout, _ = timeouts[w.chat_id]
            rows.append(
                {"c": w.chat_id, "at": w.since, "due": w.since + timedelta(seconds=reply_timeout)}
            )
    if not rows:
        return  # chats routing has not queued yet: queue_chats starts their wait
    await session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.chat_id == bindparam("c"), ASSIGNMENTS.c.state.in_(OPEN))
        .values(
            awaiting_reply_since=func.coalesce(ASSIGNMENTS.c.awaiting_reply_since, bindparam("at")),
            reply_due_at=case(
                (
                    ASSIGNMENTS.c.state == "assigned",
                    func.coalesce(ASSIGNMENTS.c.reply_due_at, bindparam("due")),
                ),
                else_=None,
            ),
            complete_due_at=None,
        ),
        rows,
    )


async def note_replies(session: AsyncSession, replies: Sequence[ChatReplyPosted]) -> None:
    """The owner answered: the customer waits no more, and the idle timer starts."""
    if not replies:
        return
    settings = await _queue_settings(session, {r.chat_id for r in replies})
    rows = []
    for r in replies:
        if r.chat_id in settings:
            _, idle = settings[r.chat_id]
            due = r.message.created_at + timedelta(seconds=idle) if idle else None
            rows.append({"c": r.chat_id, "due": due})
    if rows:
        await session.execute(
            update(ASSIGNMENTS)
            .where(ASSIGNMENTS.c.chat_id == bindparam("c"), ASSIGNMENTS.c.state == "assigned")
            .values(awaiting_reply_since=None, reply_due_at=None, complete_due_at=bindparam("due")),
            rows,
        )


async def _queue_settings(
    session: AsyncSession, chat_ids: set[str]
) -> dict[str, tuple[int, int | None]]:
    """(reply timeout, idle limit) of each chat's queue."""
    rows = await session.execute(
        select(ASSIGNMENTS.c.chat_id, QUEUES.c.reply_timeout_s, QUEUES.c.auto_complete_after_s)
        .join(QUEUES, QUEUES.c.id == ASSIGNMENTS.c.queue_id)
        .where(ASSIGNMENTS.c.chat_id.in_(chat_ids))
    )
    return {chat_id: (reply, idle) for chat_id, reply, idle in rows}


# --- timers: clock.py finds what is due and calls these with the queues locked ---------


def _acting_at(now: datetime) -> datetime:
    """When a timer fires, once its queues are locked. The clock read `now` before waiting for
    the locks (another replica's work, its own tick's earlier timers): acting at the present
    keeps events' times in the order of the changes (a chat is never offered before its last
    offer ended) and gives a new offer its whole accept time. A later `now` (a test's) stands."""
    return max(now, utcnow())


async def due_queues(session: AsyncSession, timer: str, now: datetime) -> list[str]:
    """Queues holding chats whose `timer` has run out (offers' expiry: `offer`)."""
    if timer == "offer":
        stmt = select(OFFERS.c.queue_id).where(OFFERS.c.expires_at <= now)
    else:
        column = ASSIGNMENTS.c[timer]
        stmt = select(ASSIGNMENTS.c.queue_id).where(
            column <= now, ASSIGNMENTS.c.state.in_(TIMERS[timer])
        )
    return list(await session.scalars(stmt.distinct()))


async def _due(
    session: AsyncSession, timer: str, queues: dict[str, QueueRow], now: datetime
) -> list[Assignment]:
    column = getattr(Assignment, timer)
    rows = await session.scalars(
        select(Assignment)
        .where(
            Assignment.queue_id.in_(queues),
            column <= now,
            Assignment.state.in_(TIMERS[timer]),
        )
        .order_by(column)
    )
    return list(rows)


async def expire_offers(session: AsyncSession, queue_ids: Sequence[str], now: datetime) -> None:
    """Offers past the accept limit lapse; their chats go to someone else."""
    queues = await lock_queues(in_session(session), queue_ids)
    now = _acting_at(now)
    expired = (
        await session.execute(
            OFFERS.delete()
            .where(OFFERS.c.queue_id.in_(queues), OFFERS.c.expires_at <= now)
            .returning(OFFERS.c.chat_id, OFFERS.c.agent_id, OFFERS.c.queue_id)
        )
    ).all()
    if not expired:
        return
    for chat_id, agent_id, queue_id in expired:
        emit(
            session,
            ChatOfferExpired(chat_id=chat_id, queue_id=queue_id, agent_id=agent_id, expired_at=now),
            subject=chat_id,
        )
    await session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.chat_id == bindparam("c"))
        .values(passed_over_agent_id=bindparam("agent")),
        [{"c": chat_id, "agent": agent_id} for chat_id, agent_id, _ in expired],
    )
    await requeue_unoffered(session, [chat_id for chat_id, _, _ in expired])
    await offer_waiting(in_session(session), queues, now)


async def end_waits(session: AsyncSession, queue_ids: Sequence[str], now: datetime) -> None:
    """Chats nobody accepted within the queue's maximum waiting time are completed or moved
    to the overflow queue, as the queue says."""
    # Overflow queues are locked with the rest, in order; one whose setting changed between
    # the two reads waits for the next tick.
    overflow = await session.scalars(
        select(QUEUES.c.overflow_queue_id).where(
            QUEUES.c.id.in_(queue_ids), QUEUES.c.overflow_queue_id.is_not(None)
        )
    )
    queues = await lock_queues(in_session(session), [*queue_ids, *overflow])
    now = _acting_at(now)
    for assignment in await _due(session, "wait_due_at", queues, now):
        queue = queues[assignment.queue_id]
        if queue.on_max_wait == "complete":
            await withdraw(session, "completed", now, chat_ids=[assignment.chat_id])
            _close(assignment, now)
            emit(
                session,
                ChatCompletionDue(chat_id=assignment.chat_id, reason="max_wait", due_at=now),
                subject=assignment.chat_id,
            )
        elif queue.on_max_wait == "move" and queue.overflow_queue_id in queues:
            await transfer(session, assignment.chat_id, None, to_queue=queue.overflow_queue_id)
        elif queue.on_max_wait is None:
            assignment.wait_due_at = None  # the limit was lifted
    await offer_waiting(in_session(session), queues, now)


async def flag_overdue(session: AsyncSession, queue_ids: Sequence[str], now: datetime) -> None:
    """Owners who left a customer waiting past the reply limit: tell everyone, and offer the
    chat to someone else where the queue says so."""
    queues = await lock_queues(in_session(session), queue_ids)
    now = _acting_at(now)
    for assignment in await _due(session, "reply_due_at", queues, now):
        queue = queues[assignment.queue_id]
        owner = assignment.agent_id
        assert owner is not None
        emit(
            session,
            ChatReplyOverdue(
                chat_id=assignment.chat_id,
                queue_id=queue.id,
                agent_id=owner,
                waiting_since=assignment.awaiting_reply_since or assignment.accepted_at or now,
                reoffered=queue.reoffer_overdue,
            ),
            subject=assignment.chat_id,
        )
        assignment.reply_due_at = None  # once per wait
        if queue.reoffer_overdue:
            _requeue(assignment, queue.id, passed_over=owner)
            emit(
                session,
                ChatQueued(chat_id=assignment.chat_id, queue_id=queue.id),
                subject=assignment.chat_id,
            )
    await offer_waiting(in_session(session), queues, now)


async def complete_idle(session: AsyncSession, queue_ids: Sequence[str], now: datetime) -> None:
    """Chats whose customer has said nothing since the last answer for the queue's idle limit
    are due for completion (chat completes them)."""
    queues = await lock_queues(in_session(session), queue_ids)
    now = _acting_at(now)
    for assignment in await _due(session, "complete_due_at", queues, now):
        due_at, assignment.complete_due_at = assignment.complete_due_at, None
        if assignment.awaiting_reply_since is None:
            emit(
                session,
                ChatCompletionDue(
                    chat_id=assignment.chat_id, reason="inactivity", due_at=due_at or now
                ),
                subject=assignment.chat_id,
            )


async def silent_agents(session: AsyncSession, seen_before: datetime) -> list[str]:
    """Active agents whose consoles have all been gone since before `seen_before`."""
    return list(
        await session.scalars(
            select(AGENTS.c.id).where(
                AGENTS.c.status == "active", AGENTS.c.console_seen_at < seen_before
            )
        )
    )


# --- what the gateway reads --------------------------------------------------------------


async def assignment_out(
    session: AsyncSession, assignment: Assignment, agent_id: str | None = None
) -> AssignmentOut:
    offers = (
        await session.execute(
            select(OFFERS.c.agent_id, OFFERS.c.expires_at)
            .where(OFFERS.c.chat_id == assignment.chat_id)
            .order_by(OFFERS.c.agent_id)
        )
    ).all()
    expires = next((e for a, e in offers if a == agent_id), None)
    return AssignmentOut.model_validate(
        {
            **{
                c: getattr(assignment, c)
                for c in AssignmentOut.model_fields
                if hasattr(assignment, c)
            },
            "offered_to": [a for a, _ in offers],
            "offer_expires_at": expires,
        }
    )


async def assignments_of(session: AsyncSession, agent_id: str, state: str) -> list[AssignmentOut]:
    """The chats offered to the agent (`offered`), or that they own (`assigned`)."""
    if state == "offered":
        rows = await session.scalars(
            select(Assignment)
            .join(Offer, Offer.chat_id == Assignment.chat_id)
            .where(Offer.agent_id == agent_id)
            .order_by(Assignment.queued_at)
        )
    else:
        rows = await session.scalars(
            select(Assignment)
            .where(Assignment.agent_id == agent_id, Assignment.state == "assigned")
            .order_by(Assignment.queued_at)
        )
    return [await assignment_out(session, a, agent_id) for a in rows]


async def assignments_of_contact(
    session: AsyncSession, contact_id: str, agent_id: str
) -> list[AssignmentOut]:
    """The chats of a contact this agent owns or owned, or is offered."""
    offered = select(OFFERS.c.chat_id).where(OFFERS.c.agent_id == agent_id)
    rows = await session.scalars(
        select(Assignment)
        .where(
            Assignment.contact_id == contact_id,
            or_(Assignment.agent_id == agent_id, Assignment.chat_id.in_(offered)),
        )
        .order_by(Assignment.queued_at)
    )
    return [await assignment_out(session, a, agent_id) for a in rows]


async def repoint_contacts(session: AsyncSession, merged: ContactMerged) -> None:
    """Merged contacts' chats are the survivor's: whoever was given one may read the survivor.
    Idempotent."""
    await session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.contact_id.in_(merged.merged_ids))
        .values(contact_id=merged.survivor_id)
    )
