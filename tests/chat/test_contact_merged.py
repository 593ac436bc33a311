"""chat on `contact.merged` (PostgreSQL and SQLite, through the in-process bus and the inbox):
chats move to the survivor, a redelivered merge changes nothing, and messages attributed to a
merged contact before the merge but threaded after it land on the survivor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from libs.common.bus import InMemoryBus
from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import Envelope, new_id, utcnow
from libs.common.events import ContactMerged, InboundMessage, InboundResolved, Sender
from services.chat import service
from services.chat.handlers import consumers
from services.chat.models import Chat, Message


@pytest.fixture
async def bus(db: Database) -> AsyncIterator[InMemoryBus]:
    memory = InMemoryBus(max_attempts=2, retry_delay_s=0.05)
    consumers.attach(memory, db)
    await memory.start()
    yield memory
    await memory.stop()
    await consumers.stop()


def resolved(contact_id: str, user: str, text: str) -> InboundResolved:
    """A customer message attributed to `contact_id`."""
    message = InboundMessage(
        channel_id="channel-1",
        queue_id="queue-1",
        platform="telegram",
        external_user_id=user,
        external_chat_id=user,
        external_message_id=new_id(),
        sender=Sender(first_name=user),
        text=text,
        sent_at=utcnow(),
    )
    return InboundResolved(
        contact_id=contact_id, contact_name=user, contact_created=False, message=message
    )


async def write(db: Database, contact_id: str, user: str, text: str) -> None:
    """A customer message attributed to `contact_id`, threaded by chat."""
    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, [resolved(contact_id, user, text)])


async def chats(db: Database) -> dict[str, tuple[str, str, str]]:
    """external chat id -> (contact, status, contact name) of each chat."""
    async with db.sessions() as session:
        rows = await session.scalars(select(Chat).order_by(Chat.opened_at))
        return {
            c.external_chat_id + ":" + c.id: (c.contact_id, c.status, c.contact_name) for c in rows
        }


def merge_of(survivor: str, *merged: str) -> Envelope:
    event = ContactMerged(
        merge_id=new_id(),
        survivor_id=survivor,
        survivor_name="Ivan Petrov",
        merged_ids=list(merged),
        identities=[],
        merged_by="agent-1",
        merged_at=utcnow(),
    )
    return Envelope.wrap(event, source="contacts", subject=survivor)


async def outbox_types(db: Database) -> list[str]:
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
    return [Envelope.model_validate_json(r).type for r in rows]


async def test_a_merge_delivered_three_times_moves_chats_once(
    db: Database, bus: InMemoryBus
) -> None:
    await write(db, "survivor", "s", "hello from telegram")
    await write(db, "dup", "d", "hello from another account")
    before = await outbox_types(db)
    envelope = merge_of("survivor", "dup")
    for _ in range(3):  # delivered, then redelivered twice
        await bus.publish([envelope])
    # The same merge published anew (another event id) finds nothing left to do either.
    await bus.publish([merge_of("survivor", "dup")])

    assert sorted(v for v in (await chats(db)).values()) == [
        ("survivor", "new", "Ivan Petrov"),
        ("survivor", "new", "Ivan Petrov"),
    ]
    assert await outbox_types(db) == before  # nothing emitted
    async with db.sessions() as session:
        runs = await session.scalar(
            select(func.count())
            .select_from(db.inbox)
            .where(db.inbox.c.consumer == "chat.repoint_contact")
        )
    assert runs == 2  # the three deliveries of one event ran once
    assert not bus.dead_letters

    # Attributed to the merged contact before the merge, threaded after it: the survivor's.
    await write(db, "dup", "d", "still me")
    after = await chats(db)
    assert len(after) == 2 and {v[0] for v in after.values()} == {"survivor"}
    async with db.sessions() as session:
        texts = await session.scalars(select(Message.text).order_by(Message.created_at))
        assert list(texts) == ["hello from telegram", "hello from another account", "still me"]


async def test_a_chat_the_survivor_opened_first_for_a_moved_conversation_wins(
    db: Database, bus: InMemoryBus
) -> None:
    await write(db, "dup", "d", "before the merge")
    # The merge moved identity "d" to the survivor; its next message opened a chat there
    # before chat heard of the merge.
    await write(db, "survivor", "d", "after the merge")
    await bus.publish([merge_of("survivor", "dup")])
    states = sorted((await chats(db)).values())
    assert states == [("survivor", "completed", "Ivan Petrov"), ("survivor", "new", "Ivan Petrov")]
    assert (await outbox_types(db)).count("chat.completed") == 1


async def test_a_merge_and_a_message_of_the_merged_contact_at_the_same_moment(
    db: Database,
) -> None:
    """Whichever of the two transactions starts first, the other waits for it: a message
    threaded during a merge lands on the survivor, and a chat opened during a merge moves."""
    await write(db, "dup", "d", "before the merge")
    release = asyncio.Event()

    async def merge(event: ContactMerged) -> None:
        async with db.transaction() as session:
            await service.repoint_contacts(session, event)
            await release.wait()

    # The merge first: the message, attributed to the merged contact, waits for it.
    merging = asyncio.create_task(merge(merge_of("survivor", "dup").parse(ContactMerged)))
    await asyncio.sleep(0.2)
    writing = asyncio.create_task(write(db, "dup", "d", "during the merge"))
    await asyncio.sleep(0.3)
    assert not writing.done()
    release.set()
    await asyncio.gather(merging, writing)
    assert sorted((await chats(db)).values()) == [("survivor", "new", "Ivan Petrov")]

    # The message first (a new customer's, who opens a chat): the merge waits, then moves it.
    release.clear()
    threading = asyncio.Event()

    async def open_chat() -> None:
        async with driver_transaction(db) as tx:
            await service.thread_inbound(tx, [resolved("dup-2", "e", "hello")])
            threading.set()
            await release.wait()

    opening = asyncio.create_task(open_chat())
    await threading.wait()
    merging = asyncio.create_task(merge(merge_of("survivor", "dup-2").parse(ContactMerged)))
    await asyncio.sleep(0.3)
    assert not merging.done()
    release.set()
    await asyncio.gather(opening, merging)
    assert sorted((await chats(db)).values()) == [
        ("survivor", "new", "Ivan Petrov"),
        ("survivor", "new", "Ivan Petrov"),
    ]
