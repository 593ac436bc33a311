"""The transactional outbox (libs/common/outbox.py), the inbox of `Consumers` handlers, the
driver's transactions (libs/common/driver.py), and the batched statements they are written with
(`batch_insert`, `any_of`, `any_key_of`).

Each test runs on PostgreSQL (schema `testsvc` in a fresh database) and on SQLite (a file under
tmp_path), with the `InMemoryBus` delivering what the relay publishes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bus import Bus, InMemoryBus
from libs.common.db import (
    OUTBOX_LEASE,
    Database,
    any_key_of,
    any_of,
    batch_insert,
    bus_tables,
    emit,
    key_values,
    on_postgres,
)
from libs.common.driver import DriverTx, driver_transaction
from libs.common.envelope import Envelope, utcnow
from libs.common.events import ChatQueued
from libs.common.handlers import Consumers
from libs.common.outbox import DELETE_AFTER_S, OutboxRelay
from libs.common.settings import Settings

SERVICE = "testsvc"

metadata = MetaData()
outbox, inbox = bus_tables(metadata)
# The service's own table: what a handler's or a request's work writes.
queued_chats = Table(
    "queued_chats",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("chat_id", String(36), nullable=False),
    Column("event_id", String(36)),
    Column("attempt", Integer),
)


@pytest.fixture(params=["postgresql", "sqlite"])
def settings(request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path) -> Settings:
    return Settings(
        DATABASE_URL=postgres_url if request.param == "postgresql" else None,
        AMQP_URL=None,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def db(settings: Settings, tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(settings, SERVICE, metadata, tmp_path / "no-migrations")
    async with database.engine.begin() as conn:
        if database.is_postgres:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{SERVICE}" CASCADE'))
            await conn.execute(text(f'CREATE SCHEMA "{SERVICE}"'))
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    # concurrency=1: one handler at a time per group, so arrival order is publish order.
    memory = InMemoryBus(max_attempts=3, retry_delay_s=0.05, concurrency=1)
    yield memory
    if memory.started:
        await memory.stop()


class Subscriber:
    """An outside subscriber of chat events."""

    def __init__(self, bus: Bus) -> None:
        self.received: list[Envelope] = []
        bus.subscribe("test.subscriber", ["chat.*"], self.handle)

    async def handle(self, envelope: Envelope) -> None:
        self.received.append(envelope)


class UnreachableBus(Bus):
    """A bus whose broker never confirms anything."""

    def __init__(self) -> None:
        super().__init__(max_attempts=1, retry_delay_s=0)
        self.publish_calls = 0

    async def start(self) -> None:
        self.started = True

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.publish_calls += 1
        raise ConnectionError("broker unreachable")

    async def stop(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return False


class Boom(Exception):
    pass


def queued(chat_id: str) -> ChatQueued:
    return ChatQueued(chat_id=chat_id, queue_id="queue-1")


async def queue_chat(db: Database, chat_id: str) -> Envelope:
    """A unit of work: write the change and the event it causes in one transaction."""
    async with db.transaction() as session:
        await session.execute(insert(queued_chats).values(chat_id=chat_id))
        return emit(session, queued(chat_id), subject=chat_id)


async def rows(db: Database, table: Table) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table).order_by(*table.primary_key))).all())


async def outbox_envelopes(db: Database) -> list[Envelope]:
    return [Envelope.model_validate_json(r.envelope) for r in await rows(db, outbox)]


# --- emit --------------------------------------------------------------------------------------


async def test_emit_writes_the_event_with_the_transaction(db: Database) -> None:
    db.outbox_written.clear()
    before = utcnow()
    envelope = await queue_chat(db, "chat-1")

    assert await outbox_envelopes(db) == [envelope]
    assert envelope.type == "chat.queued"
    assert envelope.source == SERVICE
    assert envelope.subject == "chat-1"
    assert envelope.parse(ChatQueued) == queued("chat-1")
    assert [r.chat_id for r in await rows(db, queued_chats)] == ["chat-1"]
    [row] = await rows(db, outbox)
    assert before + OUTBOX_LEASE <= row.leased_until <= utcnow() + OUTBOX_LEASE, (
        "born leased to this process's relay"
    )
    assert db.committed == [(row.id, envelope)], "handed to the relay after the commit"
    assert db.outbox_written.is_set(), "the commit wakes the relay"


async def test_rolled_back_transaction_emits_nothing(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.transaction() as session:
            await session.execute(insert(queued_chats).values(chat_id="chat-1"))
            emit(session, queued("chat-1"), subject="chat-1")
            raise Boom

    assert await rows(db, outbox) == []
    assert await rows(db, queued_chats) == []
    assert db.committed == []


# --- relay -------------------------------------------------------------------------------------


async def test_relay_publishes_what_was_committed_in_order_then_deletes_it(
    db: Database, bus: InMemoryBus
) -> None:
    subscriber = Subscriber(bus)
    await bus.start()
    emitted = [await queue_chat(db, f"chat-{i}") for i in range(3)]
    relay = OutboxRelay(db, bus, batch=2, poll_s=60)

    assert await relay.relay_once() == 2
    assert len(await rows(db, outbox)) == 1, "a full batch of confirmed rows is deleted at once"
    assert await relay.relay_once() == 1
    assert len(await rows(db, outbox)) == 1, "fewer wait a moment, to be deleted together"
    await asyncio.sleep(DELETE_AFTER_S)
    assert await relay.relay_once() == 0

    assert subscriber.received == emitted
    assert await rows(db, outbox) == []


async def test_unconfirmed_rows_stay_until_their_lease_runs_out(
    db: Database, bus: InMemoryBus, settings: Settings, tmp_path: Path
) -> None:
    emitted = [await queue_chat(db, "chat-1"), await queue_chat(db, "chat-2")]
    unreachable = UnreachableBus()
    await unreachable.start()

    with pytest.raises(ConnectionError):
        await OutboxRelay(db, unreachable, batch=10, poll_s=60).relay_once()

    assert await outbox_envelopes(db) == emitted, "nothing confirmed, nothing deleted"
    assert len(db.committed) == 2, "kept for the relay's next attempt"

    # Another replica's relay (a process with a working bus) leaves the leased rows alone...
    replica = Database(settings, SERVICE, metadata, tmp_path / "no-migrations")
    try:
        subscriber = Subscriber(bus)
        await bus.start()
        healthy = OutboxRelay(replica, bus, batch=10, poll_s=0)
        assert await healthy.relay_once() == 0
        assert subscriber.received == []

        # ...until the lease runs out (as if 30 s had passed), then publishes them.
        async with db.transaction() as session:
            await session.execute(
                update(outbox).values(leased_until=utcnow() - timedelta(seconds=1))
            )
        assert await healthy.relay_once() == 2
        assert subscriber.received == emitted
        await asyncio.sleep(DELETE_AFTER_S)
        assert await healthy.relay_once() == 0  # deletes what was confirmed
        assert await rows(db, outbox) == []
    finally:
        await replica.dispose()


# --- inbox: Consumers handlers -----------------------------------------------------------------


_attached: list[Consumers] = []


@pytest.fixture(autouse=True)
async def _stop_consumers() -> AsyncIterator[None]:
    yield
    while _attached:
        await _attached.pop().stop()


def record_queued_chats(attempts: list[Envelope], *, fail_first: bool = False) -> Consumers:
    """The testsvc handler of chat.queued: writes a row per chat (not idempotent by itself)."""
    consumers = Consumers(SERVICE)
    _attached.append(consumers)

    @consumers.on(ChatQueued)
    async def record(session: AsyncSession, event: ChatQueued, envelope: Envelope) -> None:
        attempts.append(envelope)
        await session.execute(
            insert(queued_chats).values(
                chat_id=event.chat_id, event_id=envelope.id, attempt=len(attempts)
            )
        )
        if fail_first and len(attempts) == 1:
            raise Boom("crashed after writing")

    return consumers


async def test_redelivered_event_is_handled_once(db: Database, bus: InMemoryBus) -> None:
    attempts: list[Envelope] = []
    record_queued_chats(attempts).attach(bus, db)
    await bus.start()
    event = Envelope.wrap(queued("chat-1"), source="routing", subject="chat-1")

    await bus.publish([event])
    await bus.publish([event])

    assert attempts == [event]
    assert [(r.chat_id, r.event_id) for r in await rows(db, queued_chats)] == [("chat-1", event.id)]
    assert [(r.event_id, r.consumer) for r in await rows(db, inbox)] == [
        (event.id, "testsvc.record")
    ]


async def test_concurrent_duplicates_are_handled_once(db: Database) -> None:
    bus = InMemoryBus(max_attempts=3, retry_delay_s=0.05, concurrency=8)
    attempts: list[Envelope] = []
    record_queued_chats(attempts).attach(bus, db)
    await bus.start()
    try:
        event = Envelope.wrap(queued("chat-1"), source="routing", subject="chat-1")
        # Two copies in flight at once (on PostgreSQL, the second waits on the inbox key).
        await bus.publish([event, event])
    finally:
        await bus.stop()

    assert [r.event_id for r in await rows(db, queued_chats)] == [event.id]
    assert [r.event_id for r in await rows(db, inbox)] == [event.id]


async def test_failed_handler_leaves_no_trace_so_the_retry_does_the_work(
    db: Database, bus: InMemoryBus
) -> None:
    attempts: list[Envelope] = []
    record_queued_chats(attempts, fail_first=True).attach(bus, db)
    await bus.start()
    event = Envelope.wrap(queued("chat-1"), source="routing", subject="chat-1")

    await bus.publish([event])  # returns once handled: attempt 1 raised, attempt 2 succeeded

    assert attempts == [event, event]
    assert bus.dead_letters == {}
    # Attempt 1's row and inbox entry were rolled back with it; attempt 2 wrote its own.
    assert [(r.event_id, r.attempt) for r in await rows(db, queued_chats)] == [(event.id, 2)]
    assert [r.event_id for r in await rows(db, inbox)] == [event.id]


async def test_inbox_is_per_consumer_group(db: Database, bus: InMemoryBus) -> None:
    first: list[Envelope] = []
    second: list[Envelope] = []
    record_queued_chats(first).attach(bus, db)
    other = Consumers("othersvc")  # another group records the same event id in this inbox
    _attached.append(other)

    @other.on(ChatQueued)
    async def audit(session: AsyncSession, event: ChatQueued, envelope: Envelope) -> None:
        second.append(envelope)

    other.attach(bus, db)
    await bus.start()
    event = Envelope.wrap(queued("chat-1"), source="routing", subject="chat-1")
    await bus.publish([event])
    await bus.publish([event])

    assert first == [event]
    assert second == [event]
    assert sorted(r.consumer for r in await rows(db, inbox)) == ["othersvc.audit", "testsvc.record"]


async def test_rows_inserted_together_keep_their_order_and_skip_conflicts(db: Database) -> None:
    chat_ids = [f"chat-{n}" for n in (3, 1, 4, 1, 5, 9, 2, 6)]
    async with db.transaction() as session:
        ids = await session.execute(
            *batch_insert(
                on_postgres(session),
                queued_chats,
                [{"chat_id": c, "attempt": n} for n, c in enumerate(chat_ids)],
                queued_chats.c.id,
            )
        )
        # A serial key grows along the rows as they were given.
        stored = dict(
            (await session.execute(select(queued_chats.c.id, queued_chats.c.attempt))).all()
        )
    assert [stored[id] for id in sorted(ids.scalars())] == list(range(len(chat_ids)))

    now = utcnow()
    async with db.transaction() as session:
        first = await session.execute(
            *batch_insert(
                on_postgres(session),
                inbox,
                [{"event_id": e, "consumer": "g", "processed_at": now} for e in ("e1", "e2")],
                inbox.c.event_id,
                ignore_conflicts=True,
            )
        )
        assert sorted(first.scalars()) == ["e1", "e2"]
        again = await session.execute(
            *batch_insert(
                on_postgres(session),
                inbox,
                [{"event_id": e, "consumer": "g", "processed_at": now} for e in ("e2", "e3", "e3")],
                inbox.c.event_id,
                ignore_conflicts=True,
            )
        )
        assert list(again.scalars()) == ["e3"]  # e2 was there, and e3 counts once


async def test_any_of_and_any_key_of_find_the_rows_asked_for(db: Database) -> None:
    rows = [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1")]
    async with db.transaction() as session:
        await session.execute(
            insert(queued_chats), [{"chat_id": c, "event_id": e} for c, e in rows]
        )
    async with db.transaction() as session:
        postgres = on_postgres(session)
        listed = select(queued_chats.c.chat_id).where(
            any_of(postgres, queued_chats.c.chat_id, ["a", "c"])
        )
        assert sorted(await session.scalars(listed)) == ["a", "a", "c"]
        named = select(queued_chats.c.event_id).where(
            any_of(postgres, queued_chats.c.chat_id, "chats")
        )
        assert sorted(await session.scalars(named, {"chats": ["c"]})) == ["1"]

        asked = {("a", "1"), ("b", "2")}
        columns = (queued_chats.c.chat_id, queued_chats.c.event_id)
        by_key = select(*columns).where(any_key_of(postgres, columns, "key"))
        found = set((await session.execute(by_key, key_values("key", asked))).all())
        # Every key asked for, and maybe other combinations of their parts.
        assert asked <= found <= {("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")}


# --- handlers on the driver (`on_driver_batch`, `driver_transaction`) --------------------------


async def test_driver_batch_handler_runs_once_and_a_failed_attempt_leaves_nothing(
    db: Database, bus: InMemoryBus
) -> None:
    consumers = Consumers(SERVICE)
    _attached.append(consumers)
    attempts: list[str] = []
    committed: list[str] = []

    @consumers.on_driver_batch(ChatQueued)
    async def record(tx: DriverTx, batch: list[tuple[ChatQueued, Envelope]]) -> None:
        for event, envelope in batch:
            attempts.append(envelope.id)
            row = {"chat_id": event.chat_id, "event_id": envelope.id, "attempt": len(attempts)}
            await tx.fetch(*batch_insert(tx.postgres, queued_chats, [row]))
            tx.after_commit(functools.partial(committed.append, envelope.id))
            if len(attempts) == 1:
                raise Boom("crashed after writing")

    consumers.attach(bus, db)
    await bus.start()
    event = Envelope.wrap(queued("chat-1"), source="routing", subject="chat-1")
    await bus.publish([event])  # attempt 1 raises and is rolled back, attempt 2 commits
    await bus.publish([event])  # a repeat: the inbox skips it

    assert attempts == [event.id, event.id]
    assert committed == [event.id]
    assert [(r.event_id, r.attempt) for r in await rows(db, queued_chats)] == [(event.id, 2)]
    assert [(r.event_id, r.consumer) for r in await rows(db, inbox)] == [
        (event.id, "testsvc.record")
    ]


NAMED = update(queued_chats).where(
    queued_chats.c.attempt == 1,  # a value of the statement's own
    queued_chats.c.chat_id == bindparam("chat"),
)


async def test_driver_statements_take_named_values_and_convert_them_like_sqlalchemy(
    db: Database,
) -> None:
    async with db.transaction() as session:
        await session.execute(
            insert(queued_chats), [{"chat_id": c, "attempt": a} for c, a in [("a", 1), ("a", 2)]]
        )
    async with driver_transaction(db) as tx:
        await tx.fetch(NAMED.values(event_id="seen"), {"chat": "a"})
    assert [(r.chat_id, r.attempt, r.event_id) for r in await rows(db, queued_chats)] == [
        ("a", 1, "seen"),
        ("a", 2, None),
    ]
    # The columns' own conversions apply: a naive time is refused, as through a session.
    naive = [{"event_id": "e1", "consumer": "c", "processed_at": utcnow().replace(tzinfo=None)}]
    with pytest.raises(Exception, match="naive datetime"):
        async with driver_transaction(db) as tx:
            await tx.fetch(*batch_insert(tx.postgres, inbox, naive))
    assert await rows(db, inbox) == []


async def test_driver_refuses_lists_rendered_at_execution_on_postgresql(db: Database) -> None:
    listed = select(queued_chats.c.id).where(
        queued_chats.c.chat_id.in_(bindparam("chats", expanding=True))
    )
    async with driver_transaction(db) as tx:
        if tx.postgres:
            with pytest.raises(TypeError, match="as an array"):
                await tx.fetch(listed, {"chats": ["a"]})
        else:
            assert await tx.fetch(listed, {"chats": ["a"]}) == []


async def test_driver_transaction_emits_with_its_work_and_only_if_it_commits(
    db: Database,
) -> None:
    db.outbox_written.clear()
    with pytest.raises(Boom):
        async with driver_transaction(db) as tx:
            await tx.fetch(*batch_insert(tx.postgres, queued_chats, [{"chat_id": "lost"}]))
            tx.emit(queued("lost"), subject="lost")
            raise Boom
    assert await rows(db, outbox) == []
    assert db.committed == [] and not db.outbox_written.is_set()

    async with driver_transaction(db) as tx:
        await tx.execute_many(
            insert(queued_chats), [{"chat_id": c, "attempt": 1} for c in ("chat-1", "chat-2")]
        )
        emitted = [tx.emit(queued(c), subject=c) for c in ("chat-1", "chat-2")]

    assert [r.chat_id for r in await rows(db, queued_chats)] == ["chat-1", "chat-2"]
    assert await outbox_envelopes(db) == emitted
    assert {e.source for e in emitted} == {SERVICE}
    assert db.committed == [
        (r.id, e) for r, e in zip(await rows(db, outbox), emitted, strict=True)
    ], "handed to the relay after the commit, in order"
    assert db.outbox_written.is_set()


async def test_driver_runs_no_python_side_default_behind_the_callers_back(db: Database) -> None:
    defaulted = Table(
        "defaulted",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer, nullable=False, default=lambda: 7),
    )
    async with db.engine.begin() as conn:
        await conn.run_sync(defaulted.create)
    async with driver_transaction(db) as tx:
        if tx.postgres:  # asyncpg alone would write NULL: refused, naming the column
            with pytest.raises(TypeError, match="must be given: n"):
                await tx.fetch(insert(defaulted), {"id": 1})
        else:  # through the session, SQLAlchemy runs the default
            await tx.fetch(insert(defaulted), {"id": 1})
    assert [tuple(r) for r in await rows(db, defaulted)] == ([] if db.is_postgres else [(1, 7)])
