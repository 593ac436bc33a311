"""contacts' database on PostgreSQL and SQLite, and contacts made the way customers make them."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import Envelope, utcnow
from libs.common.events import InboundMessage, Sender
from services.contacts import service
from services.contacts.details import ContactPatch
from services.contacts.models import Identity
from tests.support.databases import database_fixture

_users = itertools.count(1000)


db = database_fixture("contacts")


def inbound(name: str, user: str, channel: str = "channel-1") -> InboundMessage:
    return InboundMessage(
        channel_id=channel,
        queue_id="queue-1",
        platform="telegram",
        external_user_id=user,
        external_chat_id=user,
        external_message_id=f"{user}-{next(_users)}",
        sender=Sender(first_name=name),
        text="hello",
        sent_at=utcnow(),
    )


async def new_contact(db: Database, name: str, **details: Any) -> str:
    """A customer writes for the first time; their contact, with `details` set (a patch)."""
    message = inbound(name, str(next(_users)))
    async with driver_transaction(db) as tx:
        await service.resolve_contacts(tx, [message])
    async with db.sessions() as session:
        contact_id = await session.scalar(
            select(Identity.contact_id).where(Identity.external_user_id == message.external_user_id)
        )
    assert contact_id is not None
    if details:
        async with db.transaction() as session:
            await service.update_contact(session, contact_id, ContactPatch(**details), None)
    return contact_id


async def emitted(db: Database, event_type: str) -> list[dict[str, Any]]:
    """The payloads of the events of this type in the outbox (nothing relays them here)."""
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
    envelopes = [Envelope.model_validate_json(r) for r in rows]
    return [e.data for e in envelopes if e.type == event_type]
