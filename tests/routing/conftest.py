"""routing's own tables, migrated, on PostgreSQL and on SQLite, driven through its service
functions and its clock (at chosen times): each test runs on both."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatOpened
from services.routing import service
from services.routing.clock import Clock
from services.routing.models import Assignment, Offer, QueueIn
from tests.support.databases import database_fixture

db = database_fixture("routing")


class Desk:
    """A queue of agents and the chats that reach it, through routing's own functions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock = Clock(db, tick_s=1, grace_s=60)
        self._seen = 0  # outbox rows already returned by events()

    async def queue(self, agents: list[str], **options: Any) -> str:
        async with self.db.transaction() as session:
            queue = await service.create_queue(
                session, QueueIn(name=new_id(), agent_ids=agents, **options)
            )
        return queue.id

    async def status(self, agent: str, status: str) -> None:
        async with self.db.transaction() as session:
            await service.set_status(session, agent, status)  # type: ignore[arg-type]

    async def open(self, queue_id: str, count: int = 1) -> list[str]:
        """New chats, oldest first."""
        start = utcnow()
        opened = [
            ChatOpened(
                chat_id=new_id(),
                contact_id=new_id(),
                channel_id="channel-1",
                queue_id=queue_id,
                platform="telegram",
                opened_at=start + timedelta(milliseconds=i),
            )
            for i in range(count)
        ]
        async with driver_transaction(self.db) as tx:  # as routing's consumer does
            await service.queue_chats(tx, opened)
        return [o.chat_id for o in opened]

    async def accept(self, chat_id: str, agent: str) -> None:
        async with self.db.transaction() as session:
            await service.accept(session, chat_id, agent)

    async def tick(self, after_s: float) -> None:
        """The clock, `after_s` seconds from now."""
        await self.clock.tick(utcnow() + timedelta(seconds=after_s))

    async def offers(self) -> dict[str, set[str]]:
        """chat -> the agents it is offered to."""
        async with self.db.sessions() as session:
            rows = await session.execute(select(Offer.chat_id, Offer.agent_id))
        found: dict[str, set[str]] = {}
        for chat_id, agent_id in rows:
            found.setdefault(chat_id, set()).add(agent_id)
        return found

    async def assignment(self, chat_id: str) -> Assignment:
        async with self.db.sessions() as session:
            found = await session.get(Assignment, chat_id)
        assert found is not None
        return found

    async def events(self, *types: str) -> list[dict[str, Any]]:
        """The events routing emitted since the last call (of these types): type and data."""
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    select(self.db.outbox.c.id, self.db.outbox.c.envelope)
                    .where(self.db.outbox.c.id > self._seen)
                    .order_by(self.db.outbox.c.id)
                )
            ).all()
        if rows:
            self._seen = rows[-1][0]
        envelopes = [orjson.loads(envelope) for _, envelope in rows]
        return [
            {"type": e["type"], **e["data"]} for e in envelopes if not types or e["type"] in types
        ]


@pytest.fixture
def desk(db: Database) -> Desk:
    return Desk(db)


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
