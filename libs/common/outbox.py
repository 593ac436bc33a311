"""Transactional outbox: events are written with the change that caused them, then relayed.

A crash between commit and publish loses nothing: the rows stay until the bus has confirmed them.
Each row is born leased to the relay of the process that wrote it, which gets it in memory after
the commit, so the usual path reads nothing back. A lease that runs out (its relay died) makes
the row any relay's to take (`FOR UPDATE SKIP LOCKED` keeps replicas' batches disjoint), and
consumers' inboxes absorb the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import delete, or_, select, update

from libs.common.bus import Bus
from libs.common.db import OUTBOX_LEASE, Database, any_of
from libs.common.driver import driver_transaction
from libs.common.envelope import Envelope, utcnow

log = logging.getLogger(__name__)

# Published rows are deleted in bulk at most this long after they were confirmed.
DELETE_AFTER_S = 0.25


class OutboxRelay:
    """Publishes what this process's transactions committed, handed over in memory, and rows
    whose lease ran out (their relay died), read from the table; deletes them once confirmed."""

    def __init__(self, db: Database, bus: Bus, *, batch: int, poll_s: float) -> None:
        self.db = db
        self.bus = bus
        self.batch = batch
        self.poll_s = poll_s
        # Confirmed but not yet deleted: a crash leaves them leased, to be published again when
        # the lease runs out, and consumers' inboxes absorb the repeat.
        self._published: list[int] = []
        self._published_since = 0.0
        self._next_poll = 0.0
        self._delete = delete(db.outbox).where(any_of(db.is_postgres, db.outbox.c.id, "ids"))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
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
            if relayed == 0 and not self.db.committed:
                wake_at = self._next_poll
                if self._published:
                    wake_at = min(wake_at, self._published_since + DELETE_AFTER_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.db.outbox_written.wait(), max(0.0, wake_at - loop.time())
                    )

    async def relay_once(self) -> int:
        """Publish the next batch, then delete what is due; the number of events published."""
        now = asyncio.get_running_loop().time()
        rows = self.db.committed[: self.batch]
        del self.db.committed[: len(rows)]
        if not rows and now >= self._next_poll:
            self._next_poll = now + self.poll_s
            rows = await self._take_over()
        if rows:
            try:
                await self.bus.publish([envelope for _, envelope in rows])
            except BaseException:
                self.db.committed[:0] = rows  # still ours: try again
                raise
            if not self._published:
                self._published_since = now
            self._published.extend(id for id, _ in rows)
        if self._published and (
            len(self._published) >= self.batch or now >= self._published_since + DELETE_AFTER_S
        ):
            async with driver_transaction(self.db) as tx:
                await tx.fetch(self._delete, {"ids": self._published})
            self._published = []
        return len(rows)

    async def _take_over(self) -> list[tuple[int, Envelope]]:
        """Lease the rows whose lease ran out; other replicas' relays skip what is locked."""
        outbox = self.db.outbox
        now = utcnow()
        async with self.db.transaction() as session:
            due = (
                select(outbox.c.id)
                .where(or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now))
                .order_by(outbox.c.id)
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            )
            leased = await session.execute(
                update(outbox)
                .where(outbox.c.id.in_(due.scalar_subquery()))
                .values(leased_until=now + OUTBOX_LEASE)
                .returning(outbox.c.id, outbox.c.envelope)
            )
            return [(id, Envelope.from_bytes(raw.encode())) for id, raw in sorted(leased)]
