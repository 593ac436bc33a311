"""Merging contacts on a real database (PostgreSQL and SQLite): what moves, what is recorded,
asking twice, refusals, and two supervisors merging the same pair at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.events import PictureFetched
from services.contacts import merge, service
from services.contacts.merge import MergeIn, Refused
from services.contacts.models import Merge
from services.contacts.service import Merged
from tests.contacts.conftest import emitted, inbound, new_contact
from tests.contacts.test_duplicates import found


async def merged(db: Database, survivor: str, *others: str, by: str = "agent-1") -> merge.MergeOut:
    async with db.transaction() as session:
        return await merge.merge(
            session, survivor, MergeIn(duplicate_ids=list(others), merged_by=by)
        )


async def test_the_survivor_takes_identities_and_the_details_it_lacks(db: Database) -> None:
    survivor = await new_contact(db, "Ivan Petrov", phones=["+79161234567"])
    dup = await new_contact(
        db,
        "Иван Петров",
        phones=["+7 916 123 45 67", "+4930123456"],
        emails=["ivan@example.com"],
        account="ACME",
    )
    result = await merged(db, survivor, dup)

    assert result.merged_ids == [dup] and result.merged_by == "agent-1"
    assert result.moved["phones"] == ["+4930123456"] and result.moved["account"] == "ACME"
    assert result.moved["emails"] == ["ivan@example.com"]
    assert len(result.moved["identities"]) == 1
    assert result.survivor.name == "Ivan Petrov"  # its own name stays
    assert result.survivor.phones == ["+79161234567", "+4930123456"]
    assert len(result.survivor.identities) == 2

    async with db.sessions() as session:
        with pytest.raises(Merged) as gone:
            await service.get_contact(session, dup)
    assert gone.value.survivor_id == survivor
    [event] = await emitted(db, "contact.merged")
    assert (event["survivor_id"], event["merged_ids"], event["merged_by"]) == (
        survivor,
        [dup],
        "agent-1",
    )
    assert event["merge_id"] == result.merge_id
    assert (await emitted(db, "contact.updated"))[-1]["phones"] == result.survivor.phones

    # The merged contact's customer writes again: the message is the survivor's.
    identity = result.moved["identities"][0]
    async with driver_transaction(db) as tx:
        await service.resolve_contacts(tx, [inbound("Иван Петров", identity["external_user_id"])])
    assert (await emitted(db, "inbound.resolved"))[-1]["contact_id"] == survivor
    # And it is no one's duplicate any more.
    assert await found(db, survivor) == {}


async def test_asking_again_changes_nothing_and_answers_the_same_merge(db: Database) -> None:
    survivor = await new_contact(db, "Maria Garcia")
    dup = await new_contact(db, "María García")
    first = await merged(db, survivor, dup)
    again = await merged(db, survivor, dup)
    assert again == first
    assert len(await emitted(db, "contact.merged")) == 1
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Merge)) == 1
        assert [m.merge_id for m in await merge.merges_of(session, survivor)] == [first.merge_id]


async def test_merges_chain_to_the_last_survivor(db: Database) -> None:
    a = await new_contact(db, "Olga Ivanova")
    b = await new_contact(db, "Olga Ivanova")
    c = await new_contact(db, "O. Ivanova")
    await merged(db, b, c)
    await merged(db, a, b)
    async with db.sessions() as session:
        for old in (b, c):
            with pytest.raises(Merged) as gone:
                await service.get_contact(session, old)
            assert gone.value.survivor_id == a
        contact = await service.get_contact(session, a)
    assert contact is not None and len(contact.identities) == 3


async def test_refusals(db: Database) -> None:
    a = await new_contact(db, "Anna Smirnova")
    b = await new_contact(db, "Anna Smirnova")
    c = await new_contact(db, "Anna Smirnova")
    with pytest.raises(Refused) as refused:
        await merged(db, a, a)
    assert refused.value.status == 422
    with pytest.raises(Refused) as refused:
        await merged(db, a, "no-such-contact")
    assert refused.value.status == 422 and "no-such-contact" in refused.value.detail
    with pytest.raises(Refused) as refused:
        await merged(db, "no-such-contact", a)
    assert refused.value.status == 404
    await merged(db, b, c)
    with pytest.raises(Refused) as refused:
        await merged(db, a, c)  # c is b's now
    assert refused.value.status == 409 and refused.value.detail["merged_into"] == {c: b}
    with pytest.raises(Merged):
        await merged(db, c, a)
    assert len(await emitted(db, "contact.merged")) == 1


async def test_two_opposite_merges_at_once_leave_one_survivor(db: Database) -> None:
    a = await new_contact(db, "Petr Sidorov")
    b = await new_contact(db, "Пётр Сидоров")
    outcomes = await asyncio.gather(merged(db, a, b), merged(db, b, a), return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, merge.MergeOut)]
    assert len(done) == 1, outcomes
    assert all(isinstance(o, Merged | merge.MergeOut) for o in outcomes), outcomes
    survivor = done[0].survivor.id
    async with db.sessions() as session:
        contact = await service.get_contact(session, survivor)
    assert contact is not None and len(contact.identities) == 2
    assert len(await emitted(db, "contact.merged")) == 1


def picture(contact_id: str, key: str) -> PictureFetched:
    return PictureFetched(
        contact_id=contact_id,
        channel_id="channel-1",
        blob_key=key,
        content_type="image/jpeg",
        size=100,
    )


async def test_pictures_follow_merges_to_a_survivor_without_one(db: Database) -> None:
    survivor = await new_contact(db, "Ann Lee")
    dup = await new_contact(db, "Anne Lee")
    late = await new_contact(db, "A. Lee")
    async with db.transaction() as session:
        await service.record_picture(session, picture(dup, "a" * 64))
    result = await merged(db, survivor, dup)
    assert result.survivor.picture is not None and result.survivor.picture.blob_key == "a" * 64

    # A picture fetched for a contact merged meanwhile: its survivor keeps its own.
    await merged(db, survivor, late)
    async with db.transaction() as session:
        await service.record_picture(session, picture(late, "b" * 64))
    async with db.sessions() as session:
        contact = await service.get_contact(session, survivor)
    assert contact is not None and contact.picture is not None
    assert contact.picture.blob_key == "a" * 64
