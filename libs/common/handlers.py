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
they can read and write with a few statements per batch rather than a few per event.
Handlers that must talk to the outside world between transactions use `on_raw` and own their
idempotency.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.batching import GroupCommit
from libs.common.bus import Bus
from libs.common.db import Database, insert_rows
from libs.common.envelope import EVENT_TYPES, Envelope, Event, utcnow
from libs.common.logs import log_context

log = logging.getLogger(__name__)

TxHandler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[tuple[Any, Envelope]]], Awaitable[None]]
RawHandler = Callable[[Database, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class _Registered:
    name: str
    events: tuple[type[Event], ...]
    fn: Callable[..., Awaitable[None]]
    kind: Literal["each", "batch", "raw"]


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
        now = utcnow()
        events = [e.parse(EVENT_TYPES[e.type]) for e in batch]
        async with self.db.transaction() as session:
            recorded = await insert_rows(
                session,
                self.db.inbox,
                [{"event_id": e.id, "consumer": self.group, "processed_at": now} for e in batch],
                self.db.inbox.c.event_id,
                ignore_conflicts=True,
            )
            new = set(recorded.scalars())
            fresh: list[tuple[Event, Envelope]] = []
            for envelope, event in zip(batch, events, strict=True):
                if envelope.id in new:
                    new.discard(envelope.id)  # the same event twice in one batch: once
                    fresh.append((event, envelope))
                else:
                    log.info("duplicate event skipped", extra={"event_id": envelope.id})
            if self.reg.kind == "batch":
                if fresh:
                    with log_context(consumer=self.group):
                        await self.reg.fn(session, fresh)
            else:
                for event, envelope in fresh:
                    with log_context(
                        event_id=envelope.id, subject=envelope.subject, consumer=self.group
                    ):
                        await self.reg.fn(session, event, envelope)
        return [None] * len(batch)

    async def stop(self) -> None:
        await self.commits.stop()
