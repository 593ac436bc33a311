"""Bus handlers as decorated functions, one consumer group each (the nameko way).

    consumers = Consumers("contacts")

    @consumers.on(InboundMessage)
    async def resolve_contact(session: AsyncSession, event: InboundMessage, envelope: Envelope):
        ...

The handler runs inside a transaction that also records the event id in the service's inbox;
a redelivered event that is already recorded is skipped, so handlers are idempotent by
construction. Events waiting for the same handler share one transaction (group commit), so a
handler must not assume it is alone in its session. The handler never commits, acks or retries:
raising is how it asks for a retry.
Hot paths register with `on_batch` instead and get the batch's new events at once, so that
they can read and write with a few statements per batch rather than a few per event; the hottest
with `on_driver_batch`, whose transaction runs its statements on the database driver
(`libs.common.driver`, decision 19).
Handlers that must talk to the outside world between transactions use `on_raw` and own their
idempotency.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.batching import GroupCommit
from libs.common.bus import Bus
from libs.common.db import Database, batch_insert, on_postgres
from libs.common.driver import DriverTx, driver_transaction
from libs.common.envelope import EVENT_TYPES, Envelope, Event, utcnow
from libs.common.logs import log_context

log = logging.getLogger(__name__)

TxHandler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[tuple[Any, Envelope]]], Awaitable[None]]
DriverBatchHandler = Callable[[DriverTx, list[tuple[Any, Envelope]]], Awaitable[None]]
RawHandler = Callable[[Database, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class _Registered:
    name: str
    events: tuple[type[Event], ...]
    fn: Callable[..., Awaitable[None]]
    kind: Literal["each", "batch", "driver", "raw"]


class Consumers:
    def __init__(self, service: str) -> None:
        self.service = service
        self._registered: list[_Registered] = []
        self._retired: list[str] = []
        self._batches: list[_Batches] = []

    def on(self, *events: type[Event]) -> Callable[[TxHandler], TxHandler]:
        def register(fn: TxHandler) -> TxHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, "each"))
            return fn

        return register

    def on_batch(self, *events: type[Event]) -> Callable[[BatchHandler], BatchHandler]:
        """Like `on`, but the handler gets the batch's new `(event, envelope)` pairs in one list,
        in arrival order."""

        def register(fn: BatchHandler) -> BatchHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, "batch"))
            return fn

        return register

    def on_driver_batch(
        self, *events: type[Event]
    ) -> Callable[[DriverBatchHandler], DriverBatchHandler]:
        """Like `on_batch`, in a `DriverTx` instead of a session: Core statements only."""

        def register(fn: DriverBatchHandler) -> DriverBatchHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, "driver"))
            return fn

        return register

    def on_raw(self, *events: type[Event]) -> Callable[[RawHandler], RawHandler]:
        def register(fn: RawHandler) -> RawHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, "raw"))
            return fn

        return register

    def retire(self, name: str) -> None:
        """A handler this service had and has no more: its group's queue is removed."""
        self._retired.append(name)

    def attach(self, bus: Bus, db: Database) -> None:
        for name in self._retired:
            bus.retire(f"{self.service}.{name}")
        for reg in self._registered:
            group = f"{self.service}.{reg.name}"
            runner: Callable[[Envelope], Awaitable[None]]
            if reg.kind == "raw":
                runner = _raw_runner(reg, group, db)
            else:
                runner = _Batches(reg, group, db)
                self._batches.append(runner)
            bus.subscribe(group, [e.type for e in reg.events], runner)

    async def stop(self) -> None:
        for batches in self._batches:
            await batches.stop()


def _raw_runner(
    reg: _Registered, group: str, db: Database
) -> Callable[[Envelope], Awaitable[None]]:
    async def run(envelope: Envelope) -> None:
        event = envelope.parse(EVENT_TYPES[envelope.type])
        with log_context(event_id=envelope.id, subject=envelope.subject, consumer=group):
            await reg.fn(db, event, envelope)

    return run


class _Batches:
    """A transactional handler over micro-batches (see `libs.common.batching`)."""

    def __init__(self, reg: _Registered, group: str, db: Database) -> None:
        self.reg, self.group, self.db = reg, group, db
        self.commits: GroupCommit[Envelope, None] = GroupCommit(self._run, name=group)

    async def __call__(self, envelope: Envelope) -> None:
        await self.commits.submit(envelope)

    async def _run(self, batch: list[Envelope]) -> list[None]:
        events = [e.parse(EVENT_TYPES[e.type]) for e in batch]
        if self.reg.kind == "driver":
            async with driver_transaction(self.db) as tx:
                recorded = await tx.fetch(*self._inbox(tx.postgres, batch))
                await self._handle(tx, self._fresh(batch, events, recorded))
        else:
            async with self.db.transaction() as session:
                result = await session.execute(*self._inbox(on_postgres(session), batch))
                await self._handle(session, self._fresh(batch, events, result.all()))
        return [None] * len(batch)

    async def _handle(
        self, tx: AsyncSession | DriverTx, fresh: list[tuple[Event, Envelope]]
    ) -> None:
        """The handler, in the transaction that recorded the events: a batch handler once, with
        every new event; any other once per event."""
        if self.reg.kind != "each":
            if fresh:
                with log_context(consumer=self.group):
                    await self.reg.fn(tx, fresh)
            return
        for event, envelope in fresh:
            with log_context(event_id=envelope.id, subject=envelope.subject, consumer=self.group):
                await self.reg.fn(tx, event, envelope)

    def _inbox(self, postgres: bool, batch: list[Envelope]) -> tuple[Any, Any]:
        """The statement that records the batch's event ids, returning those that are new."""
        now = utcnow()
        rows = [{"event_id": e.id, "consumer": self.group, "processed_at": now} for e in batch]
        return batch_insert(
            postgres, self.db.inbox, rows, self.db.inbox.c.event_id, ignore_conflicts=True
        )

    def _fresh(
        self, batch: list[Envelope], events: list[Event], recorded: Sequence[Any]
    ) -> list[tuple[Event, Envelope]]:
        """The batch's events seen for the first time, in order."""
        new = {row[0] for row in recorded}
        fresh: list[tuple[Event, Envelope]] = []
        for envelope, event in zip(batch, events, strict=True):
            if envelope.id in new:
                new.discard(envelope.id)  # the same event twice in one batch: once
                fresh.append((event, envelope))
            else:
                log.info("duplicate event skipped", extra={"event_id": envelope.id})
        return fresh

    async def stop(self) -> None:
        await self.commits.stop()
