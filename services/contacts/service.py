"""contacts' operations: who wrote this message?"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import ContactCreated, InboundMessage, InboundResolved
from libs.common.outbox import emit
from services.contacts.models import Contact, ContactOut, Identity, IdentityOut


async def _identity_contact(session: AsyncSession, message: InboundMessage) -> Contact | None:
    return await session.scalar(
        select(Contact)
        .join(Identity, Identity.contact_id == Contact.id)
        .where(
            Identity.platform == message.platform,
            Identity.external_user_id == message.external_user_id,
            Identity.channel_id == message.channel_id,
        )
    )


async def resolve_contact(session: AsyncSession, message: InboundMessage) -> None:
    """Find the contact of the message's identity or create it; pass the message on."""
    contact = await _identity_contact(session, message)
    created = False
    if contact is None:
        contact = Contact(id=new_id(), name=message.sender.display_name, created_at=utcnow())
        session.add(contact)
        await session.flush()
        claimed = await session.execute(
            insert_ignore(session, Identity.__table__).values(  # type: ignore[arg-type]
                id=new_id(),
                contact_id=contact.id,
                platform=message.platform,
                external_user_id=message.external_user_id,
                channel_id=message.channel_id,
                username=message.sender.username,
                created_at=utcnow(),
            )
        )
        if claimed.rowcount == 0:  # type: ignore[attr-defined]
            # A concurrent message of the same new customer created the contact first.
            await session.execute(delete(Contact).where(Contact.id == contact.id))
            contact = await _identity_contact(session, message)
            assert contact is not None
        else:
            created = True
            emit(
                session,
                ContactCreated(
                    contact_id=contact.id,
                    name=contact.name,
                    platform=message.platform,
                    external_user_id=message.external_user_id,
                    channel_id=message.channel_id,
                ),
                subject=contact.id,
            )
    emit(
        session,
        InboundResolved(
            contact_id=contact.id,
            contact_name=contact.name,
            contact_created=created,
            message=message,
        ),
        subject=contact.id,
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
