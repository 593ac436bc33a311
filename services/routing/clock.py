"""routing's clock: fires the timers kept in the database.

Every replica runs one. Each tick looks for what is due with a plain read (most ticks find
nothing and write nothing), then acts in one transaction per timer with the queues locked, so
two replicas never fire one timer twice, and a replica that dies mid-tick leaves every due row
for the next tick of any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database
from libs.common.envelope import utcnow
from services.routing import service

log = logging.getLogger(__name__)

Fire = Callable[[AsyncSession, Sequence[str], datetime], Awaitable[None]]

# Which queue-held timer each action fires.
ACTIONS: dict[str, Fire] = {
    "offer": service.expire_offers,
    "wait_due_at": service.end_waits,
    "reply_due_at": service.flag_overdue,
    "complete_due_at": service.complete_idle,
}


class Clock:
    def __init__(self, db: Database, *, tick_s: float, grace_s: float) -> None:
        self.db = db
        self.tick_s = tick_s
        self.grace = timedelta(seconds=grace_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing:clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.tick_s)

    async def tick(self, now: datetime | None = None) -> None:
        """Fire what is due at `now` (the present, but for tests)."""
        now = now or utcnow()
        for timer, fire in ACTIONS.items():
            try:
                async with self.db.sessions() as session:
                    queue_ids = await service.due_queues(session, timer, now)
                if queue_ids:
                    async with self.db.transaction() as session:
                        await fire(session, queue_ids, now)
            except Exception:  # the rows stay due: the next tick tries again
                log.exception("routing timer failed", extra={"timer": timer})
        await self._time_out_consoles(now)

    async def _time_out_consoles(self, now: datetime) -> None:
        cutoff = now - self.grace
        try:
            async with self.db.sessions() as session:
                silent = await service.silent_agents(session, cutoff)
            for agent_id in silent:  # one at a time: each locks its own queues
                async with self.db.transaction() as session:
                    await service.disconnect(session, agent_id, cutoff)
        except Exception:
            log.exception("routing could not time out absent consoles")
