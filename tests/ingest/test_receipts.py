"""Delivery and read receipts against ingest's own tables (migrated, on PostgreSQL and SQLite).

Meta reports receipts per conversation by watermark ("everything sent before this time"), naming
messages only sometimes, and a receipt can arrive before the send it covers is recorded.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from libs.common.db import Database
from libs.common.envelope import Envelope, new_id, utcnow
from libs.common.events import ChatReplyPosted, DeliveryUpdated, InboundMessage, MessageView
from services.ingest import service
from services.ingest.meta.items import Receipt
from services.ingest.models import Channel, Delivery, Thread
from services.ingest.sending import Outcome

INGEST = Path(service.__file__).parent
PAGE, PSID = "104512345678901", "7012345678901234"


@pytest.fixture
async def channel(db: Database) -> Channel:
    channel = Channel(
        id=new_id(),
        kind="facebook",
        name="Support page",
        queue_id=new_id(),
        api_base="http://graph.invalid/v25.0",
        external_id=PAGE,
        token="page-token",
        secret="app-secret",
        verify_token="verify",
        human_agent_tag=False,
        status="ok",
        active=True,
        created_at=utcnow(),
    )
    async with db.transaction() as session:
        session.add(channel)
    return channel


class Platform:
    """Stands in for the platform's Send API: answers what the test says."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        return self.outcome


def reply_to(channel: Channel) -> ChatReplyPosted:
    chat_id = new_id()
    return ChatReplyPosted(
        chat_id=chat_id,
        agent_id=new_id(),
        channel_id=channel.id,
        platform="facebook",
        external_chat_id=PSID,
        message=MessageView(
            id=new_id(), chat_id=chat_id, direction="out", text="hi", created_at=utcnow()
        ),
    )


async def statuses(db: Database) -> list[tuple[str, str]]:
    """(message id, status) of every DeliveryUpdated in the outbox, in order."""
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
        updates = [Envelope.model_validate_json(r).parse(DeliveryUpdated) for r in rows]
    return [(u.message_id, u.status) for u in updates]


async def send(db: Database, channel: Channel, mid: str, ago_s: float) -> str:
    reply = reply_to(channel)
    outcome = Outcome("sent", mid, sent_at=utcnow() - timedelta(seconds=ago_s))
    await service.deliver_reply(db, {"facebook": Platform(outcome)}, reply)
    return reply.message.id


async def test_a_receipt_that_overtakes_the_send_still_counts(
    db: Database, channel: Channel
) -> None:
    receipts = service.receipt_commits(db)
    await receipts.submit((channel.id, Receipt(PAGE, PSID, "delivered", utcnow())))

    message_id = await send(db, channel, "m_1", ago_s=1)

    assert await statuses(db) == [(message_id, "delivered")]
    await receipts.stop()


async def test_watermarks_and_mids_move_deliveries_forward_only(
    db: Database, channel: Channel
) -> None:
    receipts = service.receipt_commits(db)
    older = await send(db, channel, "m_older", ago_s=10)
    newer = await send(db, channel, "m_newer", ago_s=1)
    between = utcnow() - timedelta(seconds=5)

    await receipts.submit((channel.id, Receipt(PAGE, PSID, "read", between)))
    await receipts.submit((channel.id, Receipt(PAGE, PSID, "delivered", between, ("m_newer",))))
    # An old receipt again: nothing moves back, nothing is announced.
    await receipts.submit((channel.id, Receipt(PAGE, PSID, "delivered", between)))
    # Another customer's receipts leave this conversation alone.
    await receipts.submit((channel.id, Receipt(PAGE, "other", "read", utcnow())))

    assert await statuses(db) == [
        (older, "sent"),
        (newer, "sent"),
        (older, "read"),
        (newer, "delivered"),
    ]
    async with db.sessions() as session:
        thread = await session.get(Thread, (channel.id, PSID))
        assert thread is not None
        assert thread.read_until == thread.delivered_until == between
        stored = {d.message_id: d.status for d in await session.scalars(select(Delivery))}
    assert stored == {older: "read", newer: "delivered"}
    await receipts.stop()


async def test_customer_messages_set_the_window_for_facebook_only(
    db: Database, channel: Channel
) -> None:
    inbound = service.inbound_commits(db)
    wrote = utcnow() - timedelta(days=2)

    def message(platform: str, sent_at_days_ago: float, chat: str) -> InboundMessage:
        return InboundMessage(
            channel_id=channel.id,
            queue_id=channel.queue_id,
            platform=platform,  # type: ignore[arg-type]
            external_user_id=chat,
            external_chat_id=chat,
            external_message_id=new_id(),
            sender={"first_name": "A"},  # type: ignore[arg-type]
            text="hi",
            sent_at=utcnow() - timedelta(days=sent_at_days_ago),
        )

    later = message("facebook", 2, PSID)
    earlier = message("facebook", 3, PSID)  # redelivered late: the window stays
    assert await inbound.submit(("k1", later))
    assert await inbound.submit(("k2", earlier))
    assert await inbound.submit(("k3", message("telegram", 1, "555")))

    async with db.sessions() as session:
        threads = {t.external_chat_id: t for t in await session.scalars(select(Thread))}
    assert set(threads) == {PSID}
    last = threads[PSID].last_inbound_at
    assert last is not None and abs((last - wrote).total_seconds()) < 5
    await inbound.stop()
