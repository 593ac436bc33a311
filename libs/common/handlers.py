"""Bus handlers as decorated functions, one consumer group each (the nameko way).

    consumers = Consumers("contacts")

    @consumers.on(InboundMessage)
    async def resolve_contact(session: AsyncSession, event: InboundMessage, envelope: Envelope):
        ...

The handler runs inside one transaction that also records the event id in the service's inbox;
a redelivered event that is already recorded is skipped, so handlers are idempotent by
construction. The handler never commits, acks or retries: raising is how it asks for a retry.
Handlers that must talk to the outside world between transactions use `on_raw` and own their
idempotency.
"""

from __future__ import annotations

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
            bus.subscribe(group, [e.type for e in reg.events], _runner(reg, group, db))


def _runner(reg: _Registered, group: str, db: Database) -> Callable[[Envelope], Awaitable[None]]:
    async def run(envelope: Envelope) -> None:
        model = EVENT_TYPES[envelope.type]
        event: Event = envelope.parse(model)
        with log_context(event_id=envelope.id, subject=envelope.subject, consumer=group):
            if not reg.transactional:
                await reg.fn(db, event, envelope)
                return
            async with db.transaction() as session:
                recorded = await session.execute(
                    insert_ignore(session, db.inbox).values(
                        event_id=envelope.id, consumer=group, processed_at=utcnow()
                    )
                )
                if recorded.rowcount == 0:  # type: ignore[attr-defined]
                    log.info("duplicate event skipped")
                    return
                await reg.fn(session, event, envelope)

    return run
