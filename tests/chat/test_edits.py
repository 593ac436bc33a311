"""Customers' edits against chat's own tables (migrated, on PostgreSQL and SQLite): an edit
changes its message and is announced; an older edit does not undo a newer one; an edit that
overtook its message waits for it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import Envelope, new_id, utcnow
from libs.common.events import (
    ChatMessageEdited,
    InboundEdited,
    InboundMessage,
    InboundResolved,
    Sender,
)
from services.chat import edits, service
from services.chat.models import Message, PendingEdit

CHAT = Path(service.__file__).parent
CHANNEL, USER = new_id(), "5551234567"


async def receive(db: Database, message_id: int, text: str) -> None:
    """The customer's message, as contacts passes it on."""
    inbound = InboundMessage(
        channel_id=CHANNEL,
        queue_id=new_id(),
        platform="telegram",
        external_user_id=USER,
        external_chat_id=USER,
        external_message_id=str(message_id),
        sender=Sender(first_name="Ivan"),
        text=text,
        sent_at=utcnow().replace(microsecond=0),
        sequence=message_id,
    )
    resolved = InboundResolved(
        contact_id="contact-1", contact_name="Ivan", contact_created=False, message=inbound
    )
    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, [resolved])


def edit(message_id: int, text: str, seconds_later: int) -> InboundEdited:
    return InboundEdited(
        channel_id=CHANNEL,
        platform="telegram",
        external_chat_id=USER,
        external_message_id=str(message_id),
        text=text,
        edited_at=utcnow().replace(microsecond=0) + timedelta(seconds=seconds_later),
    )


async def apply(db: Database, *events: InboundEdited) -> None:
    for event in events:
        async with db.transaction() as session:
            await edits.apply_edit(session, event)


async def texts(db: Database) -> dict[str, str | None]:
    async with db.sessions() as session:
        return {m.external_message_id or "": m.text for m in await session.scalars(select(Message))}


async def announced(db: Database) -> list[str | None]:
    """The texts `chat.message_edited` announced, in order."""
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
        envelopes = [Envelope.model_validate_json(r) for r in rows]
    return [
        e.parse(ChatMessageEdited).message.text
        for e in envelopes
        if e.type == "chat.message_edited"
    ]


async def test_an_edit_changes_its_message_and_is_announced(db: Database) -> None:
    await receive(db, 10, "Helo")

    await apply(db, edit(10, "Hello", 1))

    assert await texts(db) == {"10": "Hello"}
    assert await announced(db) == ["Hello"]
    async with db.sessions() as session:
        [message] = await service.messages_of(
            session, (await session.scalars(select(Message.chat_id))).one()
        )
    assert message.edited_at is not None


async def test_an_older_edit_does_not_undo_a_newer_one(db: Database) -> None:
    await receive(db, 20, "a")

    await apply(db, edit(20, "c", 2), edit(20, "b", 1))

    assert await texts(db) == {"20": "c"}
    assert await announced(db) == ["c"]


async def test_an_edit_that_overtook_its_message_waits_for_it(db: Database) -> None:
    await apply(db, edit(30, "newest", 2), edit(30, "older", 1))
    async with db.sessions() as session:
        [pending] = list(await session.scalars(select(PendingEdit)))
    assert pending.text == "newest"  # the newest of the waiting edits is kept

    async with db.transaction() as session:
        assert await edits.apply_pending(session) == 0  # the message is not there yet
    await receive(db, 30, "original")
    async with db.transaction() as session:
        assert await edits.apply_pending(session) == 1

    assert await texts(db) == {"30": "newest"}
    assert await announced(db) == ["newest"]
    async with db.sessions() as session:
        assert list(await session.scalars(select(PendingEdit))) == []


async def test_an_edit_whose_message_never_comes_is_dropped_after_a_day(db: Database) -> None:
    stale = edit(40, "lost", 1).model_copy(update={"received_at": utcnow() - timedelta(days=2)})
    await apply(db, stale, edit(41, "fresh", 1))

    async with db.transaction() as session:
        await edits.apply_pending(session)

    async with db.sessions() as session:
        kept = [p.external_message_id for p in await session.scalars(select(PendingEdit))]
    assert kept == ["41"]
