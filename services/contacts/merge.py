"""Merging duplicates into a surviving contact.

The survivor takes the others' identities (so their customers' later messages land on it), the
phones and e-mails it lacks, and their account and profile picture when it has none; it keeps
its own name. The merged contacts keep their rows, marked `merged_into`, so that their ids
answer 410 with the survivor's; contacts merged into them before now point at the survivor too.
chat and cases re-point chats and cases on `contact.merged`.

A merge is recorded (who, when, what moved). Asking again for a merge already done changes
nothing and answers the recorded merge: a client retrying after a lost answer is safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import emit
from libs.common.driver import in_session
from libs.common.envelope import new_id, utcnow
from libs.common.events import ContactMerged, MovedIdentity
from services.contacts.details import account_key
from services.contacts.models import Contact, ContactOut, ContactPoint, Identity, Merge, NameWord
from services.contacts.service import Merged, announce, contacts_out, points_of, set_points

CONTACTS = cast(Table, Contact.__table__)
IDENTITIES = cast(Table, Identity.__table__)
POINTS = cast(Table, ContactPoint.__table__)
NAME_WORDS = cast(Table, NameWord.__table__)
MAX_AT_ONCE = 20


class Refused(Exception):
    """The merge cannot be done as asked; `status` and `detail` say why."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _no_repeats(ids: list[str]) -> list[str]:
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate_ids lists a contact more than once")
    return ids


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duplicate_ids: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=36)]],
        Field(min_length=1, max_length=MAX_AT_ONCE),
        AfterValidator(_no_repeats),
    ]
    merged_by: str | None = None


class MergeOut(BaseModel):
    merge_id: str
    survivor: ContactOut
    merged_ids: list[str]
    merged_by: str | None
    merged_at: datetime
    moved: dict[str, Any] = Field(
        description="What the survivor took: identities, phones, emails, account."
    )


async def merge(session: AsyncSession, survivor_id: str, data: MergeIn) -> MergeOut:
    ids = sorted({survivor_id, *data.duplicate_ids})
    if survivor_id in data.duplicate_ids:
        raise Refused(422, "a contact cannot be merged into itself")
    # Every contact involved, locked in one order: concurrent merges of overlapping contacts
    # run one after the other and see each other's outcome.
    locked = {
        c.id: c
        for c in await session.scalars(
            select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id).with_for_update()
        )
    }
    survivor = locked.get(survivor_id)
    if survivor is None:
        raise Refused(404, "unknown contact")
    if survivor.merged_into is not None:
        raise Merged(survivor_id, survivor.merged_into)
    unknown = sorted(set(data.duplicate_ids) - set(locked))
    if unknown:
        raise Refused(422, f"unknown contact ids: {unknown}")
    elsewhere = {
        d: locked[d].merged_into
        for d in data.duplicate_ids
        if locked[d].merged_into not in (None, survivor_id)
    }
    if elsewhere:
        raise Refused(
            409, {"message": "already merged into other contacts", "merged_into": elsewhere}
        )
    todo = [d for d in data.duplicate_ids if locked[d].merged_into is None]
    if not todo:  # all of them done before: answer that merge
        return await _recorded(session, survivor_id, set(data.duplicate_ids))

    now = utcnow()
    moved_identities = list(
        await session.scalars(select(Identity).where(Identity.contact_id.in_(todo)))
    )
    await session.execute(
        update(IDENTITIES).where(IDENTITIES.c.contact_id.in_(todo)).values(contact_id=survivor_id)
    )
    points = await points_of(in_session(session), [survivor_id, *todo])
    moved: dict[str, Any] = {
        "identities": [
            MovedIdentity(
                platform=i.platform,
                external_user_id=i.external_user_id,
                channel_id=i.channel_id,
            ).model_dump()
            for i in moved_identities
        ],
        "phones": [],
        "emails": [],
        "account": None,
    }
    for kind, key in (("phone", "phones"), ("email", "emails")):
        have = points[survivor_id][kind]
        taken = [v for d in todo for v in points[d][kind] if v not in have]
        taken = list(dict.fromkeys(taken))
        if taken:
            await set_points(session, survivor_id, kind, have + taken)
            moved[key] = taken
    await session.execute(delete(POINTS).where(POINTS.c.contact_id.in_(todo)))
    if not survivor.account:
        account = next((locked[d].account for d in todo if locked[d].account), None)
        if account:
            survivor.account, survivor.account_key = account, account_key(account)
            moved["account"] = account
    if not survivor.picture_key:  # the profile picture too, quietly: it is not a detail
        pictured = next((locked[d] for d in todo if locked[d].picture_key), None)
        if pictured is not None:
            survivor.picture_key, survivor.picture_type = (
                pictured.picture_key,
                pictured.picture_type,
            )
    await session.execute(delete(NAME_WORDS).where(NAME_WORDS.c.contact_id.in_(todo)))
    await session.execute(
        update(CONTACTS).where(CONTACTS.c.merged_into.in_(todo)).values(merged_into=survivor_id)
    )
    for d in todo:
        locked[d].merged_into, locked[d].merged_at = survivor_id, now
    record = Merge(
        id=new_id(),
        survivor_id=survivor_id,
        merged_ids=todo,
        merged_by=data.merged_by,
        merged_at=now,
        moved=moved,
    )
    session.add(record)
    details_changed = bool(moved["phones"] or moved["emails"] or moved["account"])
    if details_changed:
        survivor.updated_at = now
    await session.flush()
    emit(
        session,
        ContactMerged(
            merge_id=record.id,
            survivor_id=survivor_id,
            survivor_name=survivor.name,
            merged_ids=todo,
            identities=[MovedIdentity.model_validate(i) for i in moved["identities"]],
            merged_by=data.merged_by,
            merged_at=now,
        ),
        subject=survivor_id,
    )
    if details_changed:
        out = await announce(session, survivor_id, data.merged_by)
    else:
        out = (await contacts_out(session, [survivor_id]))[survivor_id]
    return _out(record, out)


def _out(record: Merge, survivor: ContactOut) -> MergeOut:
    return MergeOut(
        merge_id=record.id,
        survivor=survivor,
        merged_ids=record.merged_ids,
        merged_by=record.merged_by,
        merged_at=record.merged_at,
        moved=record.moved,
    )


async def _recorded(session: AsyncSession, survivor_id: str, ids: set[str]) -> MergeOut:
    """The latest merge of the survivor that took any of `ids` (or, for contacts that reached
    it through a chain of merges, its latest merge)."""
    records = list(
        await session.scalars(
            select(Merge).where(Merge.survivor_id == survivor_id).order_by(Merge.merged_at.desc())
        )
    )
    survivor = (await contacts_out(session, [survivor_id]))[survivor_id]
    record = next((r for r in records if ids & set(r.merged_ids)), records[0])
    return _out(record, survivor)


async def merges_of(session: AsyncSession, contact_id: str) -> list[MergeOut]:
    """The merges a contact survived, newest first."""
    records = list(
        await session.scalars(
            select(Merge).where(Merge.survivor_id == contact_id).order_by(Merge.merged_at.desc())
        )
    )
    survivor = (await contacts_out(session, [contact_id]))[contact_id]
    return [_out(r, survivor) for r in records]
