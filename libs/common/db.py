"""Each service's own database: a PostgreSQL schema named after the service, or a SQLite file.

Services write in `Database.transaction()` (or, for the hottest handlers, its twin on the driver,
`libs.common.driver`): events `emit`ted in it are written to the outbox with the work, and the
relay is woken after the commit.
Alembic migrations (each service's `migrations/` folder) are applied on start, under an advisory
lock so that replicas starting together do not race.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.types import TypeDecorator

from libs.common.envelope import Envelope, Event, utcnow
from libs.common.settings import Settings

# How long the relay that an outbox row was written for may take to publish it before another
# relay (a replica's, or this one after a restart) takes it over.
OUTBOX_LEASE = timedelta(seconds=30)
# Committed rows kept in memory for the relay at most; beyond, rows wait for their lease to run out.
HANDOFF_LIMIT = 50_000
# Prepared statements kept per PostgreSQL connection (SQLAlchemy's asyncpg adapter).
PREPARED_STATEMENTS = 2000


# JSON columns (event payloads, attachments) through orjson rather than the stdlib's json.
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda value: orjson.dumps(value).decode(),
    "json_deserializer": orjson.loads,
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect (SQLite stores no offset and returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use libs.common.envelope.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def bus_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and inbox every service keeps beside its own tables."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("envelope", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        # A relay leases rows while publishing them; an expired lease means its relay died.
        Column("leased_until", UTCDateTime, nullable=True),
    )
    inbox = Table(
        "processed_events",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("consumer", String(100), primary_key=True),
        Column("processed_at", UTCDateTime, nullable=False),
    )
    return outbox, inbox


class Database:
    def __init__(self, settings: Settings, service: str, metadata: MetaData, migrations: Path):
        self.service = service
        self.metadata = metadata
        self.migrations = migrations
        self.outbox = metadata.tables["outbox"]
        self.inbox = metadata.tables["processed_events"]
        # Outbox rows this process committed, (id, envelope), for its own relay to publish
        # without reading them back or parsing them again; the flag wakes the relay.
        self.committed: list[tuple[int, Envelope]] = []
        self.outbox_written = asyncio.Event()
        self._write_lock: asyncio.Lock | None = None
        if settings.database_url:
            url = make_url(settings.database_url).set(drivername="postgresql+asyncpg")
            # Every statement a connection meets stays prepared on it: the adapter's default of
            # 100 is fewer than the texts of a busy service (the lists that are not arrays, see
            # `batch_insert`, have one text per length).
            url = url.update_query_dict({"prepared_statement_cache_size": str(PREPARED_STATEMENTS)})
            self.engine = create_async_engine(
                url,
                # Connections stay open once made, with no overflow: an overflow connection was
                # closed when it went back, and its successor paid for the server's backend
                # start and for preparing every statement again.
                pool_size=settings.db_pool_size,
                max_overflow=0,
                # No pre-ping: it doubled the round trips per transaction. A connection the server
                # dropped fails one unit of work, which the bus or the client retries.
                pool_recycle=3600,
                connect_args={"server_settings": {"search_path": service}},
                **_JSON_CODEC,
            )
        else:
            path = settings.data_path / f"{service}.db"
            self.engine = create_async_engine(f"sqlite+aiosqlite:///{path}", **_JSON_CODEC)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            # SQLite has one writer per file; queueing writers here beats "database is locked".
            self._write_lock = asyncio.Lock()
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on error.

        Events emitted in it are written to the outbox just before the commit, in one statement,
        already leased to this process's relay. After the commit it hands them to the relay and
        runs the callbacks that the work queued with `after_commit` (things that must not happen
        unless it is durable).
        """
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self.sessions())
            session.info.update(source=self.service, outbox=[], after_commit=[])
            async with session.begin():
                yield session
                emitted: list[Envelope] = session.info["outbox"]
                if emitted:
                    ids = (await session.execute(*self.outbox_insert(emitted))).all()
        if emitted:
            self.hand_to_relay(ids, emitted)
        for callback in session.info["after_commit"]:
            callback()

    def outbox_insert(self, emitted: Sequence[Envelope]) -> tuple[Insert, Any]:
        """The statement (and its parameters) that writes `emitted` to the outbox, already
        leased to this process's relay, returning their ids."""
        leased = utcnow() + OUTBOX_LEASE
        rows = [
            {"envelope": e.to_bytes().decode(), "created_at": e.time, "leased_until": leased}
            for e in emitted
        ]
        return batch_insert(self.is_postgres, self.outbox, rows, self.outbox.c.id)

    def hand_to_relay(self, ids: Sequence[Any], emitted: Sequence[Envelope]) -> None:
        """Once `outbox_insert` has committed: give its rows (the ids it returned, with their
        envelopes) to this process's relay and wake it."""
        if len(self.committed) < HANDOFF_LIMIT:
            # Ids grow in the order the rows were given (see `batch_insert`).
            self.committed.extend(zip(sorted(row[0] for row in ids), emitted, strict=True))
        # else the relay is far behind: these wait for their lease to run out instead.
        self.outbox_written.set()

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if self.is_postgres:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": f"chatdesk-migrate-{self.service}"},
                )
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.service}"'))
            await conn.run_sync(self._upgrade)

    def _upgrade(self, connection: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.migrations))
        cfg.attributes["connection"] = connection
        cfg.attributes["metadata"] = self.metadata
        command.upgrade(cfg, "head")

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def dialect_insert(postgres: bool, table: Table) -> Any:
    """PostgreSQL's or SQLite's INSERT, which has `on_conflict_do_nothing/do_update`."""
    return (postgresql if postgres else sqlite).insert(table)


# Statements built once per dialect: SQLAlchemy computes a statement's cache key once per
# object, so a statement built anew for every batch pays for that traversal every time.
_IGNORING: dict[tuple[bool, Table, tuple[Any, ...]], Insert] = {}


def insert_ignore(postgres: bool, table: Table, *returning: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the dialect, RETURNING `returning` if any (check
    `rowcount`, or the rows returned, for a hit). The same object every time."""
    key = (postgres, table, returning)
    stmt = _IGNORING.get(key)
    if stmt is None:
        stmt = dialect_insert(postgres, table).on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(*returning)
        _IGNORING[key] = stmt
    return stmt


# Batched statements on PostgreSQL take their rows and lists as arrays, so that one statement text
# serves every batch size: a multi-row VALUES or an `IN (...)` list is a new text for each
# length, prepared (parsed and planned) anew on every connection that meets it. Built once per
# shape, like `insert_ignore`'s.
_BATCH_INSERTS: dict[tuple[bool, Table, tuple[str, ...], tuple[Any, ...], bool], Insert] = {}


def batch_insert(
    postgres: bool,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *returning: Any,
    ignore_conflicts: bool = False,
) -> tuple[Insert, Any]:
    """INSERT `rows` (one or more dicts with the same keys) in one statement, RETURNING
    `returning` if any, skipping rows that conflict if `ignore_conflicts`: the statement (built
    once per dialect and shape) and its parameters, the columns as arrays on PostgreSQL, the rows
    themselves (executemany) on SQLite. Rows are inserted in the order given, so a serial key
    grows along them; the rows returned may come in any order."""
    columns = tuple(rows[0])
    key = (postgres, table, columns, returning, ignore_conflicts)
    stmt = _BATCH_INSERTS.get(key)
    if stmt is None:
        stmt = _BATCH_INSERTS[key] = _batch_insert(*key)
    if postgres:
        return stmt, {c: [row[c] for row in rows] for c in columns}
    return stmt, list(rows)


def _batch_insert(
    postgres: bool,
    table: Table,
    columns: tuple[str, ...],
    returning: tuple[Any, ...],
    ignore_conflicts: bool,
) -> Insert:
    stmt: Any
    if postgres:
        given = given_rows(table, columns)
        ordered = select(*(given.c[c] for c in columns)).order_by(given.c.ordinality)
        stmt = postgresql.insert(table).from_select(columns, ordered)
    else:
        stmt = sqlite.insert(table)
    if ignore_conflicts:
        stmt = stmt.on_conflict_do_nothing()
    if returning:
        stmt = stmt.returning(*returning)
    return stmt


def given_rows(table: Table, columns: Sequence[str]) -> Any:
    """PostgreSQL: rows given as one array per column (parameters named after the columns, typed
    like them), as a table `given` with those columns and their `ordinality`."""
    arrays = [bindparam(c, type_=postgresql.ARRAY(table.c[c].type)) for c in columns]
    return (
        func.unnest(*arrays)
        .table_valued(*columns, with_ordinality="ordinality")
        .render_derived(name="given")
    )


def any_of(postgres: bool, column: Any, values: Collection[Any] | str) -> ColumnElement[bool]:
    """`column IN values`, written `column = ANY(array)` on PostgreSQL: one text for any length.
    `values` is the list itself, or the name of a parameter that brings it at execution."""
    name, value = (values, None) if isinstance(values, str) else (None, list(values))
    if postgres:
        array = bindparam(name, value, type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    return column.in_(bindparam(name, value, expanding=True))


def any_key_of(postgres: bool, columns: Sequence[Any], name: str) -> ColumnElement[bool]:
    """`(columns) IN keys`, as each column against its own values (`any_of`, the parameters
    that `key_values(name, keys)` gives). That also matches mixed combinations of the keys'
    parts: the caller drops the rows whose key it did not ask for. Suits keys that differ in one
    column or two, with an index over the columns."""
    return and_(*(any_of(postgres, c, f"{name}_{i}") for i, c in enumerate(columns)))


def key_values(name: str, keys: Collection[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """The parameters of `any_key_of(..., name)` for `keys`."""
    width = len(next(iter(keys)))
    return {f"{name}_{i}": sorted({key[i] for key in keys}) for i in range(width)}


def advisory_locks(shared: bool = False) -> TextClause:
    """PostgreSQL advisory locks, held until the transaction ends, on the strings `:keys` (by
    their hash) in the namespace `:namespace` (an int). One statement takes them all, in the
    order of their hashes (PostgreSQL calls a volatile function of the select list after
    sorting), so that two transactions taking several never wait for each other in a circle.
    Shared locks exclude only exclusive ones."""
    return _SHARED_LOCKS if shared else _LOCKS


def _locks(function: str) -> TextClause:
    return text(
        f"SELECT {function}(:namespace, k)"
        " FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest(:keys) AS key) AS keys ORDER BY k"
    ).bindparams(bindparam("keys", type_=postgresql.ARRAY(String)))


_LOCKS = _locks("pg_advisory_xact_lock")
_SHARED_LOCKS = _locks("pg_advisory_xact_lock_shared")


def emit(session: AsyncSession, event: Event, *, subject: str | None = None) -> Envelope:
    """Add `event` to the outbox of the `Database.transaction()` that `session` belongs to."""
    envelope = Envelope.wrap(event, source=session.info["source"], subject=subject)
    session.info["outbox"].append(envelope)
    return envelope


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the current `Database.transaction()` has committed."""
    session.info["after_commit"].append(callback)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def run_migrations_env() -> None:
    """Body of every service's `migrations/env.py`: migrate on the connection `migrate` passes."""
    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=context.config.attributes["metadata"],
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: Any, _context: Any) -> str | Literal[False]:
    # Revisions stand alone: our column types are written as the plain SQLAlchemy type they store.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False
