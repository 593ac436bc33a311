"""Live events for agents' consoles.

Bus events that concern an agent are appended to that agent's event log (a table, so the log is
shared by gateway replicas and survives restarts); each open WebSocket sends what is in the log
after its cursor. A commit hands its new rows to this process's connections at once, with no
query; a connection reads the log itself when it resumes, falls behind, or every second, to
catch rows written by other replicas.

A connection's cursor only moves forward, so nothing may land behind it:
- An agent's rows commit in the order of their ids. With several replicas appending at once, a
  row that took a lower id but committed later would be behind a cursor that had moved past it.
  Each transaction therefore holds a lock per agent (PostgreSQL advisory locks, taken in one
  order) from before it takes ids until it commits.
- A handed frame says which row of the agent's it `follows`. A connection sends it as it is
  only if that row is where its cursor stands; otherwise another replica wrote in between, and
  the connection reads the log from its cursor (complete, by the rule above) instead.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Delete, Select, String, Table, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import advisory_locks, any_of, batch_insert
from libs.common.driver import DriverTx
from libs.common.envelope import Envelope, Event
from libs.common.events import (
    AgentStatusChanged,
    ChatAccepted,
    ChatCompleted,
    ChatMessageEdited,
    ChatMessageReceived,
    ChatMessageStatusChanged,
    ChatMessageUpdated,
    ChatOffered,
    ChatOfferExpired,
    ChatOfferWithdrawn,
    ChatReplyOverdue,
    ChatReplyPosted,
    ChatTransferred,
    DuplicatesFound,
)
from libs.common.handlers import Consumers
from services.gateway.models import AgentEvent, ChatHolder

FOR_AGENTS: tuple[type[Event], ...] = (
    ChatOffered,
    ChatOfferExpired,
    ChatOfferWithdrawn,
    ChatAccepted,
    ChatReplyOverdue,
    ChatTransferred,
    ChatMessageReceived,
    ChatMessageEdited,
    ChatReplyPosted,
    ChatMessageStatusChanged,
    ChatMessageUpdated,
    ChatCompleted,
    AgentStatusChanged,
    DuplicatesFound,
)


HOLDERS = cast(Table, ChatHolder.__table__)
EVENTS = cast(Table, AgentEvent.__table__)
PAGE = 500
LOG_LOCKS = 0x6C6F67  # the advisory locks' namespace ("log"), beside the agent's hash


@dataclass(frozen=True, slots=True)
class Frame:
    """One event of an agent's log, as its console receives it."""

    id: int
    type: str
    data: dict[str, Any]
    follows: int | None = None  # handed by a commit: the agent's row before this one (0: none)


class Listener:
    """One open console connection: the frames this process's commits handed it, and a flag
    that wakes it. A listener that falls a page behind stops collecting and reads the log."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._frames: list[Frame] = []
        self._overflowed = False

    def hand(self, frame: Frame) -> None:
        if len(self._frames) < PAGE:
            self._frames.append(frame)
        else:
            self._overflowed = True
        self.wake.set()

    def take(self) -> list[Frame] | None:
        """The frames handed since the last call, or None if some were dropped."""
        frames, overflowed = self._frames, self._overflowed
        self._frames, self._overflowed = [], False
        return None if overflowed else frames


class Hub:
    """The open connections of this process, by agent."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = defaultdict(set)

    def connect(self, agent_id: str) -> Listener:
        listener = Listener()
        self._listeners[agent_id].add(listener)
        return listener

    def disconnect(self, agent_id: str, listener: Listener) -> None:
        self._listeners[agent_id].discard(listener)
        if not self._listeners[agent_id]:
            del self._listeners[agent_id]

    def agents(self) -> list[str]:
        """The agents with a connection open here."""
        return list(self._listeners)

    def hand(self, frames: list[tuple[str, Frame]]) -> None:
        for agent_id, frame in frames:
            for listener in self._listeners.get(agent_id, ()):
                listener.hand(frame)


@functools.cache
def _holders_of(postgres: bool) -> Select[tuple[str, str]]:
    return select(HOLDERS.c.chat_id, HOLDERS.c.agent_id).where(
        any_of(postgres, HOLDERS.c.chat_id, "chat_ids")
    )


@functools.cache
def _release(postgres: bool) -> Delete:
    return delete(HOLDERS).where(any_of(postgres, HOLDERS.c.chat_id, "chat_ids"))


async def _holders(tx: DriverTx, chat_ids: set[str]) -> dict[str, set[str]]:
    held: dict[str, set[str]] = defaultdict(set)
    if chat_ids:
        rows = await tx.fetch(_holders_of(tx.postgres), {"chat_ids": sorted(chat_ids)})
        for chat_id, agent_id in rows:
            held[chat_id].add(agent_id)
    return held


async def _save_holders(tx: DriverTx, holders: dict[str, set[str]], changed: set[str]) -> None:
    if not changed:
        return
    await tx.fetch(_release(tx.postgres), {"chat_ids": sorted(changed)})
    rows = [{"chat_id": c, "agent_id": a} for c in changed for a in holders[c]]
    if rows:
        await tx.fetch(*batch_insert(tx.postgres, HOLDERS, rows, ignore_conflicts=True))


def _recipients(event: Event, holders: dict[str, set[str]], changed: set[str]) -> set[str]:
    """Who must hear of the event; updates who holds its chat (offered to, or owner)."""
    if isinstance(event, AgentStatusChanged):
        return {event.agent_id}
    # Every other event is a chat's.
    chat_id: str = event.chat_id  # type: ignore[attr-defined]
    match event:
        case ChatOffered():
            held, told = holders[chat_id] | {event.agent_id}, {event.agent_id}
        case ChatOfferExpired() | ChatOfferWithdrawn():
            held, told = holders[chat_id] - {event.agent_id}, {event.agent_id}
        case ChatAccepted():
            held, told = {event.agent_id}, {event.agent_id}
        case ChatTransferred():
            held = {event.to_agent_id} if event.to_agent_id else set()
            told = {a for a in (event.from_agent_id, event.to_agent_id) if a}
        case ChatReplyOverdue():
            held = holders[chat_id] - ({event.agent_id} if event.reoffered else set())
            told = {event.agent_id}
        case ChatCompleted():
            held = set()
            told = holders[chat_id] | ({event.agent_id} if event.agent_id else set())
        case _:
            # Chat's events name the holder chat knew of, which may be behind routing's word
            # (a transfer): the holders decide, unless gateway has not heard of any yet.
            agent_id: str | None = event.agent_id  # type: ignore[attr-defined]
            return set(holders[chat_id]) or ({agent_id} if agent_id else set())
    if held != holders[chat_id]:
        holders[chat_id] = held
        changed.add(chat_id)
    return told


def register(consumers: Consumers, hub: Hub) -> None:
    @consumers.on_driver_batch(*FOR_AGENTS)
    async def push_to_agents(tx: DriverTx, batch: list[tuple[Event, Envelope]]) -> None:
        """Append each event to the log of every agent whose console must hear of it.

        The holder table follows routing's offers, acceptances, transfers and completions, so
        that chat's events reach whoever holds the chat now, including a customer message chat
        published before it heard of the offer.
        """
        chat_ids = {
            e.chat_id  # type: ignore[attr-defined]
            for e, _ in batch
            if not isinstance(e, AgentStatusChanged)
        }
        holders = await _holders(tx, chat_ids)
        changed: set[str] = set()
        rows: list[dict[str, Any]] = []
        for event, envelope in batch:
            for agent_id in sorted(_recipients(event, holders, changed)):
                rows.append(
                    {
                        "agent_id": agent_id,
                        "type": envelope.type,
                        "data": envelope.data,
                        "source_event_id": envelope.id,
                        "created_at": envelope.time,
                    }
                )
        await _save_holders(tx, holders, changed)
        if not rows:
            return
        agent_ids = {row["agent_id"] for row in rows}
        await _lock_logs(tx, agent_ids)
        newest = await _newest(tx, agent_ids)
        inserted = await tx.fetch(
            *batch_insert(
                tx.postgres,
                EVENTS,
                rows,
                EVENTS.c.id,
                EVENTS.c.source_event_id,
                EVENTS.c.agent_id,
                ignore_conflicts=True,
            )
        )
        by_source = {(r["source_event_id"], r["agent_id"]): r for r in rows}
        frames = []
        for id, source, agent_id in sorted(tuple(row) for row in inserted):
            row = by_source[source, agent_id]
            frames.append((agent_id, Frame(id, row["type"], row["data"], newest.get(agent_id, 0))))
            newest[agent_id] = id
        tx.after_commit(functools.partial(hub.hand, frames))


async def _lock_logs(tx: DriverTx, agent_ids: set[str]) -> None:
    """Hold these agents' logs until commit, so that their rows commit in the order of their ids.

    SQLite needs none: it has one writer at a time.
    """
    if tx.postgres:
        await tx.fetch(advisory_locks(), {"namespace": LOG_LOCKS, "keys": sorted(agent_ids)})


_NEWEST_SQLITE = (
    select(EVENTS.c.agent_id, func.max(EVENTS.c.id))
    .where(EVENTS.c.agent_id.in_(bindparam("agents", expanding=True)))
    .group_by(EVENTS.c.agent_id)
)


async def _newest(tx: DriverTx, agent_ids: set[str]) -> dict[str, int]:
    """Each agent's newest row in the log, if it has any."""
    newest = _NEWEST_PG if tx.postgres else _NEWEST_SQLITE
    rows = await tx.fetch(newest, {"agents": sorted(agent_ids)})
    return {agent_id: id for agent_id, id in rows if id is not None}


# One index probe per agent: grouped by agent, PostgreSQL would read each agent's whole log.
_NEWEST_PG = text(
    "SELECT a, (SELECT max(id) FROM agent_events WHERE agent_id = a) FROM unnest(:agents) AS a"
).bindparams(bindparam("agents", type_=ARRAY(String)))


def in_sequence(frames: list[Frame], cursor: int) -> bool:
    """Whether handed frames follow on from `cursor` with nothing another replica wrote in
    between (frames at or below it were sent already)."""
    for frame in frames:
        if frame.id <= cursor:
            continue
        if frame.follows != cursor:
            return False
        cursor = frame.id
    return True


async def latest_event_id(session: AsyncSession, agent_id: str) -> int:
    return (
        await session.scalar(
            select(func.coalesce(func.max(EVENTS.c.id), 0)).where(EVENTS.c.agent_id == agent_id)
        )
        or 0
    )


async def events_after(session: AsyncSession, agent_id: str, cursor: int) -> list[Frame]:
    rows = await session.execute(
        select(EVENTS.c.id, EVENTS.c.type, EVENTS.c.data)
        .where(EVENTS.c.agent_id == agent_id, EVENTS.c.id > cursor)
        .order_by(EVENTS.c.id)
        .limit(PAGE)
    )
    return [Frame(*row) for row in rows]
