"""contacts' operations: who wrote this message?"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Row, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import ContactCreated, InboundMessage, InboundResolved
from libs.common.outbox import emit
from services.contacts.models import Contact, ContactOut, Identity, IdentityOut

CONTACTS = cast(Table, Contact.__table__)
IDENTITIES = cast(Table, Identity.__table__)


async def _identity_contact(session: AsyncSession, message: InboundMessage) -> Row[Any, Any] | None:
    return (
        await session.execute(
            select(CONTACTS.c.id, CONTACTS.c.name)
            .join(IDENTITIES, IDENTITIES.c.contact_id == CONTACTS.c.id)
            .where(
                IDENTITIES.c.platform == message.platform,
                IDENTITIES.c.external_user_id == message.external_user_id,
                IDENTITIES.c.channel_id == message.channel_id,
            )
        )
    ).first()


async def resolve_contact(session: AsyncSession, message: InboundMessage) -> None:
    """Find the contact of the message's identity or create it; pass the message on.

    Core statements rather than the ORM: this runs for every customer message.
    """
    found = await _identity_contact(session, message)
    if found is not None:
        contact_id, name, created = found.id, found.name, False
    else:
        contact_id, name, created = new_id(), message.sender.display_name, True
        now = utcnow()
        await session.execute(insert(CONTACTS).values(id=contact_id, name=name, created_at=now))
        claimed = await session.execute(
            insert_ignore(session, IDENTITIES).values(
                id=new_id(),
                contact_id=contact_id,
                platform=message.platform,
                external_user_id=message.external_user_id,
                channel_id=message.channel_id,
                username=message.sender.username,
                created_at=now,
            )
        )
        if claimed.rowcount == 0:  # type: ignore[attr-defined]
            # A concurrent message of the same new customer created the contact first.
            await session.execute(delete(CONTACTS).where(CONTACTS.c.id == contact_id))
            found = await _identity_contact(session, message)
            assert found is not None
            contact_id, name, created = found.id, found.name, False
        else:
            emit(
                session,
                ContactCreated(
                    contact_id=contact_id,
                    name=name,
                    platform=message.platform,
                    external_user_id=message.external_user_id,
                    channel_id=message.channel_id,
                ),
                subject=contact_id,
            )
    emit(
        session,
        InboundResolved(
            contact_id=contact_id, contact_name=name, contact_created=created, message=message
        ),
        subject=contact_id,
    )


async def get_contact(session: AsyncSession, contact_id: str) -> ContactOut | None:
    contact = await session.get(Contact, contact_id)
    if contact is None:
        return None
    identities = await session.scalars(select(Identity).where(Identity.contact_id == contact_id))
    return ContactOut(
        id=contact.id,
        name=contact.name,
        created_at=contact.created_at,
        identities=[
            IdentityOut(
                platform=i.platform,
                external_user_id=i.external_user_id,
                channel_id=i.channel_id,
                username=i.username,
            )
            for i in identities
        ],
    )
