"""contacts' operations: who wrote this message, and a contact's details."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Delete, Select, Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import any_key_of, any_of, batch_insert, emit, key_values
from libs.common.driver import DriverTx, in_session
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    ContactCreated,
    ContactUpdated,
    IdentityUnreachable,
    InboundMessage,
    InboundResolved,
    PictureFetched,
)
from services.contacts.details import ContactPatch, account_key
from services.contacts.models import (
    Contact,
    ContactOut,
    ContactPoint,
    Identity,
    IdentityOut,
    NameWord,
    PictureOut,
)
from services.contacts.names import indexed_words, name_key

CONTACTS = cast(Table, Contact.__table__)
IDENTITIES = cast(Table, Identity.__table__)
IDENTITY = (IDENTITIES.c.platform, IDENTITIES.c.external_user_id, IDENTITIES.c.channel_id)
POINTS = cast(Table, ContactPoint.__table__)
NAME_WORDS = cast(Table, NameWord.__table__)


class Merged(Exception):
    """The contact was merged into another one, `survivor_id`."""

    def __init__(self, contact_id: str, survivor_id: str) -> None:
        super().__init__(contact_id)
        self.contact_id = contact_id
        self.survivor_id = survivor_id


Key = tuple[str, str, str]  # (platform, platform user id, channel): one identity


def _key(message: InboundMessage) -> Key:
    return (message.platform, message.external_user_id, message.channel_id)


@functools.cache
def _contacts_of_stmt(postgres: bool) -> Select[Any]:
    return (
        select(IDENTITIES.c.unreachable_since, CONTACTS.c.id, CONTACTS.c.name, *IDENTITY)
        .join(CONTACTS, IDENTITIES.c.contact_id == CONTACTS.c.id)
        .where(any_key_of(postgres, IDENTITY, "identity"))
    )


async def _contacts_of(
    tx: DriverTx, keys: set[Key], unreachable: dict[Key, datetime] | None = None
) -> dict[Key, tuple[str, str]]:
    """The (contact id, name) of each identity that has a contact; identities flagged
    unreachable go into `unreachable`, with the time they were flagged."""
    rows = await tx.fetch(_contacts_of_stmt(tx.postgres), key_values("identity", keys))
    found: dict[Key, tuple[str, str]] = {}
    for unreachable_since, contact_id, name, *identity in rows:
        key = cast(Key, tuple(identity))
        if key not in keys:
            continue  # another combination of the keys' parts
        found[key] = (contact_id, name)
        if unreachable is not None and unreachable_since is not None:
            unreachable[key] = unreachable_since
    return found


def name_word_rows(contact_id: str, key: str) -> list[dict[str, Any]]:
    """The candidate index's rows for a contact's name key."""
    words = indexed_words(key)
    count = len(key.split())
    return [
        {"contact_id": contact_id, "word": w, "words": count, "full_words": len(words)}
        for w in words
    ]


async def resolve_contacts(tx: DriverTx, batch: Sequence[InboundMessage]) -> None:
    """Find the contact of each message's identity or create it; pass the messages on.

    A batch costs a handful of statements whatever its size, on the database driver (decision
    19): this runs for every customer message. A new customer's messages within a batch create
    one contact. Merges re-point identities, so a merged contact's customer lands on the
    survivor here.
    """
    unreachable: dict[Key, datetime] = {}
    known = await _contacts_of(tx, {_key(m) for m in batch}, unreachable)
    if unreachable:
        await _reachable_again(tx, batch, unreachable)
    new: dict[Key, InboundMessage] = {}
    for message in batch:
        if _key(message) not in known:
            new.setdefault(_key(message), message)
    created: set[Key] = set()
    if new:
        now = utcnow()
        contacts = {key: (new_id(), m.sender.display_name) for key, m in new.items()}
        await tx.fetch(
            *batch_insert(
                tx.postgres,
                CONTACTS,
                [
                    {"id": cid, "name": name, "name_key": name_key(name), "created_at": now}
                    for cid, name in contacts.values()
                ],
            )
        )
        identities = batch_insert(
            tx.postgres,
            IDENTITIES,
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
            *IDENTITY,
            ignore_conflicts=True,
        )
        created = {(row[0], row[1], row[2]) for row in await tx.fetch(*identities)}
        lost = set(new) - created
        if lost:
            # Another replica created these customers' contacts at the same moment: use theirs.
            await tx.fetch(
                _delete_contacts(tx.postgres), {"ids": [contacts[key][0] for key in lost]}
            )
            known |= await _contacts_of(tx, lost)
        words = [
            row
            for key in created
            for row in name_word_rows(contacts[key][0], name_key(contacts[key][1]))
        ]
        if words:
            await tx.fetch(*batch_insert(tx.postgres, NAME_WORDS, words))
        for key in created:
            known[key] = contacts[key]
            contact_id, name = contacts[key]
            tx.emit(
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
        tx.emit(
            InboundResolved(
                contact_id=contact_id,
                contact_name=name,
                contact_created=key in created and key not in announced,
                message=message,
            ),
            subject=contact_id,
        )
        announced.add(key)


@functools.cache
def _delete_contacts(postgres: bool) -> Delete:
    return delete(CONTACTS).where(any_of(postgres, CONTACTS.c.id, "ids"))


async def _reachable_again(
    tx: DriverTx, batch: Sequence[InboundMessage], unreachable: dict[Key, datetime]
) -> None:
    """A customer who writes can be written to: clear the flag of identities that wrote after
    it was set (a message older than the flag is one that overtook it)."""
    back = {
        _key(m) for m in batch if _key(m) in unreachable and m.received_at > unreachable[_key(m)]
    }
    if back:
        await tx.execute_many(
            _REACHABLE,
            [{"platform_": p, "user_": u, "channel_": c} for p, u, c in sorted(back)],
        )


_REACHABLE = (
    update(IDENTITIES)
    .where(
        IDENTITIES.c.platform == bindparam("platform_"),
        IDENTITIES.c.external_user_id == bindparam("user_"),
        IDENTITIES.c.channel_id == bindparam("channel_"),
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


@functools.cache
def _points_of_stmt(postgres: bool) -> Select[Any]:
    return (
        select(POINTS.c.contact_id, POINTS.c.kind, POINTS.c.value)
        .where(any_of(postgres, POINTS.c.contact_id, "ids"))
        .order_by(POINTS.c.contact_id, POINTS.c.kind, POINTS.c.position)
    )


async def points_of(tx: DriverTx, ids: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """Each contact's phones and e-mails, in their order: {id: {"phone": [...], ...}}."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"phone": [], "email": []})
    ids = sorted(set(ids))
    if not ids:
        return out
    for contact_id, kind, value in await tx.fetch(_points_of_stmt(tx.postgres), {"ids": ids}):
        out[contact_id][kind].append(value)
    return out


async def contacts_out(session: AsyncSession, ids: Sequence[str]) -> dict[str, ContactOut]:
    """Live contacts by id, with their details and identities (merged ones are left out)."""
    if not ids:
        return {}
    contacts = list(
        await session.scalars(
            select(Contact).where(Contact.id.in_(ids), Contact.merged_into.is_(None))
        )
    )
    found = [c.id for c in contacts]
    points = await points_of(in_session(session), found)
    identities: dict[str, list[IdentityOut]] = defaultdict(list)
    # Columns, not ORM objects: a merge moves identities with a Core update in this session.
    for row in await session.execute(
        select(
            IDENTITIES.c.contact_id,
            IDENTITIES.c.platform,
            IDENTITIES.c.external_user_id,
            IDENTITIES.c.channel_id,
            IDENTITIES.c.username,
            IDENTITIES.c.unreachable_since,
            IDENTITIES.c.unreachable_reason,
        )
        .where(IDENTITIES.c.contact_id.in_(found))
        .order_by(IDENTITIES.c.created_at, IDENTITIES.c.id)
    ):
        identities[row.contact_id].append(
            IdentityOut(
                platform=row.platform,
                external_user_id=row.external_user_id,
                channel_id=row.channel_id,
                username=row.username,
                unreachable=row.unreachable_since is not None,
                unreachable_since=row.unreachable_since,
                unreachable_reason=row.unreachable_reason,
            )
        )
    return {
        c.id: ContactOut(
            id=c.id,
            name=c.name,
            phones=points[c.id]["phone"],
            emails=points[c.id]["email"],
            account=c.account,
            created_at=c.created_at,
            updated_at=c.updated_at,
            identities=identities[c.id],
            picture=_picture(c),
        )
        for c in contacts
    }


def _picture(contact: Contact) -> PictureOut | None:
    if contact.picture_key and contact.picture_type:
        return PictureOut(blob_key=contact.picture_key, content_type=contact.picture_type)
    return None


async def live_contact(
    session: AsyncSession, contact_id: str, *, for_update: bool = False
) -> Contact | None:
    """The contact, None if unknown; raises `Merged` for a merged one."""
    contact = await session.get(Contact, contact_id, with_for_update=for_update)
    if contact is not None and contact.merged_into is not None:
        raise Merged(contact_id, contact.merged_into)
    return contact


async def get_contact(session: AsyncSession, contact_id: str) -> ContactOut | None:
    if await live_contact(session, contact_id) is None:
        return None
    return (await contacts_out(session, [contact_id]))[contact_id]


async def set_points(session: AsyncSession, contact_id: str, kind: str, values: list[str]) -> None:
    await session.execute(
        delete(POINTS).where(POINTS.c.contact_id == contact_id, POINTS.c.kind == kind)
    )
    if values:
        await session.execute(
            insert(POINTS),
            [
                {"contact_id": contact_id, "kind": kind, "value": v, "position": i}
                for i, v in enumerate(values)
            ],
        )


async def set_name(session: AsyncSession, contact: Contact, name: str) -> None:
    contact.name = name
    contact.name_key = name_key(name)
    await session.execute(delete(NAME_WORDS).where(NAME_WORDS.c.contact_id == contact.id))
    if rows := name_word_rows(contact.id, contact.name_key):
        await session.execute(insert(NAME_WORDS), rows)


async def announce(session: AsyncSession, contact_id: str, by_agent: str | None) -> ContactOut:
    """The contact as it now is, and `contact.updated` saying so."""
    out = (await contacts_out(session, [contact_id]))[contact_id]
    emit(
        session,
        ContactUpdated(
            contact_id=contact_id,
            name=out.name,
            phones=out.phones,
            emails=out.emails,
            account=out.account,
            updated_by=by_agent,
        ),
        subject=contact_id,
    )
    return out


async def update_contact(
    session: AsyncSession, contact_id: str, patch: ContactPatch, by_agent: str | None
) -> ContactOut | None:
    contact = await live_contact(session, contact_id, for_update=True)
    if contact is None:
        return None
    if patch.name is not None and patch.name != contact.name:
        await set_name(session, contact, patch.name)
    if patch.phones is not None:
        await set_points(session, contact_id, "phone", patch.phones)
    if patch.emails is not None:
        await set_points(session, contact_id, "email", patch.emails)
    if "account" in patch.model_fields_set:
        contact.account = patch.account or None
        contact.account_key = account_key(contact.account)
    contact.updated_at = utcnow()
    await session.flush()
    return await announce(session, contact_id, by_agent)


async def record_picture(session: AsyncSession, fetched: PictureFetched) -> None:
    """The contact's profile picture, as ingest stored it. A contact merged meanwhile gives it
    to its survivor, unless the survivor has a picture of its own."""
    contact = await session.get(Contact, fetched.contact_id)
    if contact is None:
        return
    if contact.merged_into is not None:
        contact = await session.get(Contact, contact.merged_into)
        if contact is None or contact.picture_key is not None:
            return
    contact.picture_key, contact.picture_type = fetched.blob_key, fetched.content_type
