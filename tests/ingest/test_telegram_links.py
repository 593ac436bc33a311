"""Long polling from several replicas: one process at a time polls a channel (lease rows in
`telegram_links`), another takes over when it stops renewing, and nothing is accepted twice.

Two `Links` supervisors stand for two ingest replicas on one database; the fake Bot API serves
getUpdates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from libs.common.db import Database
from libs.common.envelope import Envelope
from libs.common.events import InboundEdited, InboundMessage
from libs.common.settings import Settings
from services.ingest import service, telegram_link
from services.ingest.models import Channel, TelegramLink
from services.ingest.telegram import TelegramBots
from services.ingest.telegram_inbound import TelegramInbound
from services.ingest.telegram_link import Links, claim, release
from tests.support.channels import stored_telegram_channel
from tests.support.desk import edited_update, eventually, new_bot_token, telegram_update
from tests.support.fake_telegram import FakeTelegram

LEASE_S = 1.0


@pytest.fixture
async def channel(db: Database, fake_telegram: FakeTelegram) -> Channel:
    return await stored_telegram_channel(db, fake_telegram.url, new_bot_token())


class Replica:
    """What one ingest process runs for Telegram: its bots, inbound commit and link supervisor."""

    def __init__(self, db: Database, name: str) -> None:
        settings = Settings(
            DATABASE_URL=None,
            AMQP_URL=None,
            telegram_lease_s=LEASE_S,
            telegram_poll_timeout_s=1,
        )
        self.bots = TelegramBots()
        self.inbound = service.inbound_commits(db)
        self.links = Links(db, self.bots, TelegramInbound(self.inbound), settings, holder=name)

    def polls(self, channel: Channel) -> bool:
        running = self.links._running.get(channel.id)
        return running is not None and not running.task.done()

    async def crash(self) -> None:
        """Stops without releasing its claims, as a killed process does."""
        for channel_id in list(self.links._running):
            await self.links._stop_link(channel_id)
        await self.close()

    async def close(self) -> None:
        await self.inbound.stop()
        await self.bots.close()


@pytest.fixture
async def replicas(db: Database) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(db, "replica-a"), Replica(db, "replica-b")
    yield a, b
    for replica in (a, b):
        await replica.links.stop()
        await replica.close()


async def accepted(db: Database) -> list[Any]:
    """The inbound events in the outbox, in order."""
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
        envelopes = [Envelope.model_validate_json(r) for r in rows]
    return [
        e.parse(InboundMessage if e.type == "inbound.received" else InboundEdited)
        for e in envelopes
        if e.type.startswith("inbound.")
    ]


async def test_a_claim_is_one_holders_until_released_or_expired(
    db: Database, channel: Channel
) -> None:
    assert await claim(db, "a", [channel.id], LEASE_S) == {channel.id}
    assert await claim(db, "b", [channel.id], LEASE_S) == set()
    assert await claim(db, "a", [channel.id], LEASE_S) == {channel.id}  # renewed

    await release(db, "a", [channel.id])
    assert await claim(db, "b", [channel.id], LEASE_S) == {channel.id}

    await asyncio.sleep(LEASE_S + 0.1)  # b stopped renewing
    assert await claim(db, "a", [channel.id], LEASE_S) == {channel.id}


async def test_one_replica_polls_and_another_takes_over_when_it_dies(
    db: Database,
    channel: Channel,
    fake_telegram: FakeTelegram,
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await a.links.reconcile()
    await b.links.reconcile()
    assert a.polls(channel) and not b.polls(channel)
    assert fake_telegram.sent("deleteWebhook")[0].token == channel.token

    fake_telegram.push(channel.token, telegram_update(100, "first"), telegram_update(101, "second"))
    events = await eventually(lambda: accepted(db), lambda es: len(es) == 2)
    assert [e.text for e in events] == ["first", "second"]
    assert [e.sequence for e in events] == [100, 101]
    async with db.sessions() as session:
        link = await session.get(TelegramLink, channel.id)
    assert link is not None and link.holder == "replica-a"
    await eventually(lambda: _next_update_id(db, channel), lambda n: n == 102)

    await a.crash()
    await b.links.reconcile()
    assert not b.polls(channel)  # a's claim still runs
    await asyncio.sleep(LEASE_S + 0.1)
    await b.links.reconcile()
    assert b.polls(channel)

    # b goes on from where a got to; an edit takes the same path as a message.
    fake_telegram.push(channel.token, edited_update(102, 100, "first, edited"))
    events = await eventually(lambda: accepted(db), lambda es: len(es) == 3)
    assert isinstance(events[-1], InboundEdited) and events[-1].text == "first, edited"
    calls = [c for c in fake_telegram.sent("getUpdates") if c.params.get("offset")]
    assert calls[-1].params["offset"] in ("102", "103")


async def test_a_deactivated_channel_stops_being_polled(
    db: Database,
    channel: Channel,
    fake_telegram: FakeTelegram,
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    await a.links.reconcile()
    assert a.polls(channel)

    async with db.transaction() as session:
        stored = await session.get(Channel, channel.id)
        assert stored is not None
        stored.active = False
    await a.links.reconcile()

    assert not a.polls(channel)
    polled = len(fake_telegram.sent("getUpdates"))
    fake_telegram.push(channel.token, telegram_update(7, "nobody reads this"))
    await asyncio.sleep(1.5)
    assert len(fake_telegram.sent("getUpdates")) == polled
    assert await accepted(db) == []


async def test_a_refused_token_flags_the_channel(
    db: Database,
    channel: Channel,
    fake_telegram: FakeTelegram,
    replicas: tuple[Replica, Replica],
) -> None:
    fake_telegram.refused_tokens.add(channel.token)
    a, _ = replicas
    await a.links.reconcile()

    async def status() -> tuple[str, str | None]:
        async with db.sessions() as session:
            stored = await session.get(Channel, channel.id)
            assert stored is not None
            return stored.status, stored.status_reason

    flagged = await eventually(status, lambda s: s[0] == "token_invalid")
    assert "401" in (flagged[1] or "")


async def _next_update_id(db: Database, channel: Channel) -> int | None:
    return await telegram_link.next_update_id(db, channel.id)
