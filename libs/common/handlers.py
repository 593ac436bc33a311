"""Bus handlers as decorated functions, one consumer group each (the nameko way).

    consumers = Consumers("contacts")

    @consumers.on(InboundMessage)
    async def resolve_contact(session: AsyncSession, event: InboundMessage, envelope: Envelope):
        ...

The handler runs inside a transaction that also records the event id in the service's inbox;
a redelivered event that is already recorded is skipped, so handlers are idempotent by
construction. Events waiting for the same handler share one transaction (see `_Batches`), so a
handler must not assume it is alone in its session. The handler never commits, acks or retries:
raising is how it asks for a retry.
Handlers that must talk to the outside world between transactions use `on_raw` and own their
idempotency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bus import Bus
from libs.common.db import Database, insert_ignore
from libs.common.envelope import EVENT_TYPES, Envelope, Event, utcnow
from libs.common.logs import log_context

log = logging.getLogger(__name__)

TxHandler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]
RawHandler = Callable[[Database, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class _Registered:
    name: str
    events: tuple[type[Event], ...]
    fn: Callable[..., Awaitable[None]]
    transactional: bool


class Consumers:
    def __init__(self, service: str) -> None:
        self.service = service
        self._registered: list[_Registered] = []
        self._batches: list[_Batches] = []

    def on(self, *events: type[Event]) -> Callable[[TxHandler], TxHandler]:
        def register(fn: TxHandler) -> TxHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, transactional=True))
            return fn

        return register

    def on_raw(self, *events: type[Event]) -> Callable[[RawHandler], RawHandler]:
        def register(fn: RawHandler) -> RawHandler:
            self._registered.append(_Registered(fn.__name__, events, fn, transactional=False))
            return fn

        return register

    def attach(self, bus: Bus, db: Database) -> None:
        for reg in self._registered:
            group = f"{self.service}.{reg.name}"
            runner = _runner(reg, group, db)
            if isinstance(runner, _Batches):
                self._batches.append(runner)
            bus.subscribe(group, [e.type for e in reg.events], runner)

    async def stop(self) -> None:
        for batches in self._batches:
            await batches.stop()


def _runner(reg: _Registered, group: str, db: Database) -> Callable[[Envelope], Awaitable[None]]:
    if reg.transactional:
        return _Batches(reg, group, db)

    async def run(envelope: Envelope) -> None:
        event = envelope.parse(EVENT_TYPES[envelope.type])
        with log_context(event_id=envelope.id, subject=envelope.subject, consumer=group):
            await reg.fn(db, event, envelope)

    return run


@dataclass(eq=False)
class _Delivery:
    envelope: Envelope
    event: Event
    done: asyncio.Future[None]

    def settle(self, error: BaseException | None = None) -> None:
        if self.done.done():  # the bus gave up waiting (shutdown): redelivery will come
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class _Batches:
    """Runs a transactional handler over the deliveries waiting for it, in one transaction.

    A transaction per event costs more than the handler's own statements, so whatever has queued
    up while the previous batch ran goes into the next one (up to `MAX_BATCH`): batches grow with
    load and stay at one event when idle. If a batch fails, its events are retried one by one, so
    only the failing event goes back to the bus for a retry.
    """

    MAX_BATCH = 100

    def __init__(self, reg: _Registered, group: str, db: Database) -> None:
        self.reg, self.group, self.db = reg, group, db
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    async def __call__(self, envelope: Envelope) -> None:
        if self.worker is None:
            self.worker = asyncio.create_task(self._work(), name=f"consumer:{self.group}")
        event = envelope.parse(EVENT_TYPES[envelope.type])
        delivery = _Delivery(envelope, event, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(delivery)
        await delivery.done

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._run(batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].settle(exc)
                    continue
                for delivery in batch:
                    try:
                        await self._run([delivery])
                    except Exception as single:
                        delivery.settle(single)
                    else:
                        delivery.settle()
            else:
                for delivery in batch:
                    delivery.settle()

    async def _run(self, batch: list[_Delivery]) -> None:
        now = utcnow()
        async with self.db.transaction() as session:
            recorded = await session.scalars(
                insert_ignore(session, self.db.inbox)
                .values(
                    [
                        {"event_id": d.envelope.id, "consumer": self.group, "processed_at": now}
                        for d in batch
                    ]
                )
                .returning(self.db.inbox.c.event_id)
            )
            new = set(recorded)
            for delivery in batch:
                envelope = delivery.envelope
                with log_context(
                    event_id=envelope.id, subject=envelope.subject, consumer=self.group
                ):
                    if envelope.id not in new:
                        log.info("duplicate event skipped")
                        continue
                    new.discard(envelope.id)  # the same event twice in one batch: once
                    await self.reg.fn(session, delivery.event, envelope)

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
