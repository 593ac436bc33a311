"""A customer's waits for an answer, as chat announces them (on PostgreSQL and SQLite): each
wait starts once, with the first message after a reply; the chat's opening starts the first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import Envelope, new_id, utcnow
from libs.common.events import (
    ChatCustomerWaiting,
    InboundMessage,
    InboundResolved,
    Sender,
)
from services.chat import service
from services.chat.models import Chat

CHANNEL = new_id()


def resolved(message_id: int, user: str = "5551234567") -> InboundResolved:
    inbound = InboundMessage(
        channel_id=CHANNEL,
        queue_id="queue-1",
        platform="telegram",
        external_user_id=user,
        external_chat_id=user,
        external_message_id=str(message_id),
        sender=Sender(first_name="Ivan"),
        text=f"message {message_id}",
        sent_at=utcnow().replace(microsecond=0),
        sequence=message_id,
    )
    return InboundResolved(
        contact_id=f"contact-{user}", contact_name="Ivan", contact_created=False, message=inbound
    )


async def receive(db: Database, *batch: InboundResolved) -> None:
    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, list(batch))


async def reply(db: Database) -> None:
    async with db.transaction() as session:
        chat = (await session.scalars(select(Chat).with_for_update())).one()
        await service.post_reply(session, chat, "agent-1", "On it")


async def waits(db: Database) -> list[tuple[str, datetime]]:
    """What `chat.customer_waiting` said, in order: (chat, since)."""
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
        envelopes = [Envelope.model_validate_json(r) for r in rows]
    found = [e.parse(ChatCustomerWaiting) for e in envelopes if e.type == ChatCustomerWaiting.type]
    return [(w.chat_id, w.since) for w in found]


async def chat_id(db: Database) -> str:
    async with db.sessions() as session:
        return (await session.scalars(select(Chat.id))).one()


async def test_a_wait_starts_with_the_first_message_after_a_reply(db: Database) -> None:
    await receive(db, resolved(1))  # opens the chat: the first wait
    await receive(db, resolved(2))  # the same wait
    assert await waits(db) == []

    await reply(db)
    third, fourth = resolved(3), resolved(4)
    await receive(db, third, fourth)  # one batch: the wait starts at the first of them
    await receive(db, resolved(5))
    assert await waits(db) == [(await chat_id(db), third.message.received_at)]

    await reply(db)
    sixth = resolved(6)
    await receive(db, sixth)
    assert [since for _, since in await waits(db)] == [
        third.message.received_at,
        sixth.message.received_at,
    ]


async def test_only_the_chats_that_were_answered_start_a_wait(db: Database) -> None:
    await receive(db, resolved(1, user="1"))
    await reply(db)
    await receive(db, resolved(1, user="2"))  # a second customer's new chat

    await receive(db, resolved(2, user="1"), resolved(2, user="2"))

    async with db.sessions() as session:
        answered = (
            await session.scalars(select(Chat.id).where(Chat.contact_id == "contact-1"))
        ).one()
    assert [chat for chat, _ in await waits(db)] == [answered]
