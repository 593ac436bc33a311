"""Transactions on the database driver itself, for the hottest handlers (decision 19).

An `AsyncSession` costs several times what asyncpg costs for each statement, and at 100 messages
a second that is a fifth of a hop's CPU. A `DriverTx` runs SQLAlchemy statements without it: on
PostgreSQL each statement is compiled once by SQLAlchemy (SQL text, parameter order, bind
processors) and then run on the pooled connection's asyncpg connection, in asyncpg's own
transaction. On SQLite (embedded mode) the same statements go through a session, so a handler
has one set of statements for both dialects.

Statements must be built once (module level, or cached per dialect) and take their values as
named parameters: the compiled form is cached per statement object and parameter names. Every
column with a Python-side default must be given (the driver runs no defaults). Rows come back as
the driver gives them (asyncpg records on PostgreSQL), without SQLAlchemy's result processing:
read them by position. asyncpg already returns aware datetimes and decoded JSON.

Events emitted in a `DriverTx` go to the outbox just before the commit and to the relay after
it, as in `Database.transaction()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable

from libs.common.db import Database, after_commit, emit, on_postgres
from libs.common.envelope import Envelope, Event

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class DriverTx(Protocol):
    postgres: bool

    async def fetch(self, stmt: Executable, params: Params | None = None) -> Sequence[Any]:
        """Run `stmt` in this transaction; its rows, if it returns any. Several sets of
        parameters (executemany) only on SQLite: on PostgreSQL a batch comes as arrays."""
        ...

    async def execute_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run `stmt` once per set of parameters, in one round trip; no rows come back."""
        ...

    def emit(self, event: Event, *, subject: str | None = None) -> Envelope:
        """Add `event` to the outbox of this transaction."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed."""
        ...


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # Per positional parameter: its name, its value when the caller gives none, its processor.
    binds: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, default, process in self.binds:
            value = params.get(name, default)
            args.append(process(value) if process is not None and value is not None else value)
        return args


# Statement objects are built once, so this holds a few dozen; the statement is kept with its
# compiled form so that its id is never reused while cached.
_COMPILED: dict[tuple[int, tuple[str, ...]], tuple[Executable, _Compiled]] = {}


def _compiled(stmt: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    """`stmt` compiled as SQLAlchemy compiles it for parameters named `keys`: an INSERT with no
    VALUES of its own, say, writes just those columns."""
    cached = _COMPILED.get((id(stmt), keys))
    if cached is not None:
        return cached[1]
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    if "POSTCOMPILE" in compiled.string:
        raise TypeError("a list rendered at execution (IN): pass it as an array (`any_of`)")
    defaulted = [*compiled.insert_prefetch, *compiled.update_prefetch]
    if defaulted:
        names = ", ".join(c.key for c in defaulted)
        raise TypeError(f"columns with Python-side defaults must be given: {names}")
    binds = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((name, None if bind.required else bind.effective_value, process))
    result = _Compiled(compiled.string, tuple(binds))
    _COMPILED[id(stmt), keys] = (stmt, result)
    return result


@dataclass
class _AsyncpgTx:
    connection: asyncpg.Connection
    dialect: Dialect
    source: str
    emitted: list[Envelope] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    postgres: bool = True

    async def fetch(self, stmt: Executable, params: Params | None = None) -> Sequence[Any]:
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("on PostgreSQL a statement takes one set of parameters (arrays)")
        params = params or {}
        compiled = _compiled(stmt, self.dialect, tuple(params))
        return await self.connection.fetch(compiled.sql, *compiled.args(params))

    async def execute_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = _compiled(stmt, self.dialect, tuple(rows[0]))
        await self.connection.executemany(compiled.sql, [compiled.args(row) for row in rows])

    def emit(self, event: Event, *, subject: str | None = None) -> Envelope:
        envelope = Envelope.wrap(event, source=self.source, subject=subject)
        self.emitted.append(envelope)
        return envelope

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)


@dataclass
class _SessionTx:
    session: AsyncSession
    postgres: bool = False

    async def fetch(self, stmt: Executable, params: Params | None = None) -> Sequence[Any]:
        await self._flush()
        # A Core statement's result is a cursor's, which says whether there are rows to read.
        result = cast(CursorResult[Any], await self.session.execute(stmt, params))
        return result.all() if result.returns_rows else []

    async def execute_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._flush()
        await self.session.execute(stmt, rows)

    async def _flush(self) -> None:
        # Core statements do not flush the session's pending ORM changes themselves.
        if self.session.new or self.session.dirty or self.session.deleted:
            await self.session.flush()

    def emit(self, event: Event, *, subject: str | None = None) -> Envelope:
        return emit(self.session, event, subject=subject)

    def after_commit(self, callback: Callable[[], None]) -> None:
        after_commit(self.session, callback)


def in_session(session: AsyncSession) -> DriverTx:
    """A `DriverTx` over a session's transaction (`Database.transaction()`), for code that
    serves both the driver's handlers and the session's requests."""
    return _SessionTx(session, on_postgres(session))


@contextlib.asynccontextmanager
async def driver_transaction(db: Database) -> AsyncIterator[DriverTx]:
    """One unit of work, like `db.transaction()`: commits on success, rolls back on error."""
    if not db.is_postgres:
        async with db.transaction() as session:
            yield _SessionTx(session)
        return
    async with db.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # a pooled connection that is open
        tx = _AsyncpgTx(driver, db.engine.dialect, db.service)
        async with driver.transaction():
            yield tx
            if tx.emitted:
                ids = await tx.fetch(*db.outbox_insert(tx.emitted))
    if tx.emitted:
        db.hand_to_relay(ids, tx.emitted)
    for callback in tx.callbacks:
        callback()
