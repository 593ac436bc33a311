"""Transactional outbox: events are written with the change that caused them, then relayed.

A crash between commit and publish loses nothing: the rows stay until the bus has confirmed them.
Relays of several replicas lease disjoint batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL); a
lease that runs out (its relay died mid-publish) makes the rows eligible again, and consumers'
inboxes absorb the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bus import Bus
from libs.common.db import Database
from libs.common.envelope import Envelope, Event, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)


def emit(session: AsyncSession, event: Event, *, subject: str | None = None) -> Envelope:
    """Add `event` to the outbox of the `Database.transaction()` that `session` belongs to."""
    envelope = Envelope.wrap(event, source=session.info["source"], subject=subject)
    session.info["outbox_rows"].append(
        {"envelope": envelope.to_bytes().decode(), "created_at": envelope.time}
    )
    return envelope


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, batch: int, poll_s: float) -> None:
        self.db = db
        self.bus = bus
        self.batch = batch
        self.poll_s = poll_s
        # Published but not yet deleted: a crash leaves them leased, to be published again when
        # the lease runs out, and consumers' inboxes absorb the repeat.
        self._published: list[int] = []

    async def run(self) -> None:
        while True:
            self.db.outbox_written.clear()
            try:
                relayed = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"service": self.db.service})
                await asyncio.sleep(self.poll_s)
                continue
            if relayed < self.batch:
                # Woken by a commit, or by the poll for rows other replicas left behind.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.db.outbox_written.wait(), self.poll_s)

    async def relay_once(self) -> int:
        """Lease and publish the next batch; the previous batch's rows are deleted in the same
        transaction, so a busy relay costs one transaction per batch."""
        outbox = self.db.outbox
        now = utcnow()
        async with self.db.transaction() as session:
            if self._published:
                await session.execute(delete(outbox).where(outbox.c.id.in_(self._published)))
            due = (
                select(outbox.c.id)
                .where(or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now))
                .order_by(outbox.c.id)
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            )
            rows = sorted(
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(due.scalar_subquery()))
                    .values(leased_until=now + LEASE)
                    .returning(outbox.c.id, outbox.c.envelope)
                )
            )
            ids = [id for id, _ in rows]
        self._published = []
        if rows:
            await self.bus.publish([Envelope.from_bytes(raw.encode()) for _, raw in rows])
            self._published = ids
        return len(rows)
