"""contacts' operations: who wrote this message?"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import insert_ignore
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    ContactCreated,
    IdentityUnreachable,
    InboundMessage,
    InboundResolved,
    PictureFetched,
)
from libs.common.outbox import emit
from services.contacts.models import Contact, ContactOut, Identity, IdentityOut, PictureOut

CONTACTS = cast(Table, Contact.__table__)
IDENTITIES = cast(Table, Identity.__table__)


Key = tuple[str, str, str]  # (platform, platform user id, channel): one identity


def _key(message: InboundMessage) -> Key:
    return (message.platform, message.external_user_id, message.channel_id)


async def _contacts_of(
    session: AsyncSession, keys: set[Key], unreachable: dict[Key, datetime] | None = None
) -> dict[Key, tuple[str, str]]:
    """The (contact id, name) of each identity that has a contact; identities flagged
    unreachable go into `unreachable`, with the time they were flagged."""
    rows = await session.execute(
        select(
            IDENTITIES.c.platform,
            IDENTITIES.c.external_user_id,
            IDENTITIES.c.channel_id,
            IDENTITIES.c.unreachable_since,
            CONTACTS.c.id,
            CONTACTS.c.name,
        )
        .join(CONTACTS, IDENTITIES.c.contact_id == CONTACTS.c.id)
        .where(
            tuple_(
                IDENTITIES.c.platform, IDENTITIES.c.external_user_id, IDENTITIES.c.channel_id
            ).in_(keys)
        )
    )
    found: dict[Key, tuple[str, str]] = {}
    for r in rows:
        key = (r.platform, r.external_user_id, r.channel_id)
        found[key] = (r.id, r.name)
        if unreachable is not None and r.unreachable_since is not None:
            unreachable[key] = r.unreachable_since
    return found


async def resolve_contacts(session: AsyncSession, batch: Sequence[InboundMessage]) -> None:
    """Find the contact of each message's identity or create it; pass the messages on.

    A batch costs a handful of Core statements whatever its size: this runs for every customer
    message. A new customer's messages within a batch create one contact.
    """
    unreachable: dict[Key, datetime] = {}
    known = await _contacts_of(session, {_key(m) for m in batch}, unreachable)
    if unreachable:
        await _reachable_again(session, batch, unreachable)
    new: dict[Key, InboundMessage] = {}
    for message in batch:
        if _key(message) not in known:
            new.setdefault(_key(message), message)
    created: set[Key] = set()
    if new:
        now = utcnow()
        contacts = {key: (new_id(), m.sender.display_name) for key, m in new.items()}
        await session.execute(
            insert(CONTACTS),
            [{"id": cid, "name": name, "created_at": now} for cid, name in contacts.values()],
        )
        claimed = await session.execute(
            insert_ignore(session, IDENTITIES).returning(
                IDENTITIES.c.platform, IDENTITIES.c.external_user_id, IDENTITIES.c.channel_id
            ),
            [
                {
                    "id": new_id(),
                    "contact_id": contacts[key][0],
                    "platform": m.platform,
                    "external_user_id": m.external_user_id,
                    "channel_id": m.channel_id,
                    "username": m.sender.username,
                    "created_at": now,
                }
                for key, m in new.items()
            ],
        )
        created = {(row[0], row[1], row[2]) for row in claimed}
        lost = set(new) - created
        if lost:
            # Another replica created these customers' contacts at the same moment: use theirs.
            await session.execute(
                delete(CONTACTS).where(CONTACTS.c.id.in_([contacts[key][0] for key in lost]))
            )
            known |= await _contacts_of(session, lost)
        for key in created:
            known[key] = contacts[key]
            contact_id, name = contacts[key]
            emit(
                session,
                ContactCreated(
                    contact_id=contact_id,
                    name=name,
                    platform=new[key].platform,
                    external_user_id=new[key].external_user_id,
                    channel_id=new[key].channel_id,
                ),
                subject=contact_id,
            )
    announced: set[Key] = set()
    for message in batch:
        key = _key(message)
        contact_id, name = known[key]
        emit(
            session,
            InboundResolved(
                contact_id=contact_id,
                contact_name=name,
                contact_created=key in created and key not in announced,
                message=message,
            ),
            subject=contact_id,
        )
        announced.add(key)


async def _reachable_again(
    session: AsyncSession, batch: Sequence[InboundMessage], unreachable: dict[Key, datetime]
) -> None:
    """A customer who writes can be written to: clear the flag of identities that wrote after
    it was set (a message older than the flag is one that overtook it)."""
    back = {
        _key(m) for m in batch if _key(m) in unreachable and m.received_at > unreachable[_key(m)]
    }
    if back:
        await session.execute(
            update(IDENTITIES)
            .where(
                tuple_(
                    IDENTITIES.c.platform, IDENTITIES.c.external_user_id, IDENTITIES.c.channel_id
                ).in_(back)
            )
            .values(unreachable_since=None, unreachable_reason=None)
        )


async def flag_unreachable(session: AsyncSession, event: IdentityUnreachable) -> None:
    """The platform said the customer cannot receive this channel's messages."""
    await session.execute(
        update(IDENTITIES)
        .where(
            IDENTITIES.c.platform == event.platform,
            IDENTITIES.c.external_user_id == event.external_user_id,
            IDENTITIES.c.channel_id == event.channel_id,
        )
        .values(unreachable_since=event.detected_at, unreachable_reason=event.reason)
    )


async def get_contact(session: AsyncSession, contact_id: str) -> ContactOut | None:
    contact = await session.get(Contact, contact_id)
    if contact is None:
        return None
    identities = await session.scalars(select(Identity).where(Identity.contact_id == contact_id))
    picture = None
    if contact.picture_key and contact.picture_type:
        picture = PictureOut(blob_key=contact.picture_key, content_type=contact.picture_type)
    return ContactOut(
        id=contact.id,
        name=contact.name,
        created_at=contact.created_at,
        picture=picture,
        identities=[
            IdentityOut(
                platform=i.platform,
                external_user_id=i.external_user_id,
                channel_id=i.channel_id,
                username=i.username,
                unreachable=i.unreachable_since is not None,
                unreachable_since=i.unreachable_since,
                unreachable_reason=i.unreachable_reason,
            )
            for i in identities
        ],
    )


async def record_picture(session: AsyncSession, fetched: PictureFetched) -> None:
    """The contact's profile picture, as ingest stored it."""
    await session.execute(
        update(CONTACTS)
        .where(CONTACTS.c.id == fetched.contact_id)
        .values(picture_key=fetched.blob_key, picture_type=fetched.content_type)
    )
