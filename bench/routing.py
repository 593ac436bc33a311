"""Routing benchmark: offers per second with 200 active agents and 10,000 waiting chats, and the
time from an agent turning active to their first offer (`make bench-routing`).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.routing

What runs is routing's own code, not a model of it: the functions of `services/routing/service.py`
that its internal API, its bus handlers and its clock call, each in its own
`Database.transaction()` as they do, in this process, on a fresh PostgreSQL database migrated by
routing's migrations. The HTTP hop from the gateway, the bus and the push to the console are left
out (`bench/e2e.py` measures those); what is measured is the part that decides, under the queue
lock that every replica takes. All agents are in one queue (least busy), so every offer contends
for one row lock, as it would across any number of replicas.

1. **Backlog**: 10,000 `chat.opened` events go through `queue_chats` in batches of 200 (the bus
   handler's batches) while every agent is inactive.
2. **Turning active, quiet**: the 200 agents turn active one after the other (`set_status`); the
   agent's first offers are made and committed in that same transaction, so the time to the
   first offer is the call's duration.
3. **Steady load**, in rounds: `--workers` agents' consoles at once each take a standing offer
   (from the `chat.offered` events routing committed), accept it (`accept`) and complete it
   (`close_chat`, what the `chat.completed` handler runs); the freed slot gets the next waiting
   chat. Meanwhile one agent after another goes inactive (offers withdrawn) and active again:
   their time to the first offer under load. The backlog is topped up to 10,000 before each
   round.
4. **Baseline**, in the same rounds, alternating with routing's: the same cycle written as bare
   SQL on asyncpg against a copy of routing's tables (same rows, same indexes), with the same
   queue lock and the same rows written (offer, assignment, an outbox row per event), but none
   of routing's choosing: the freed slot's agent gets the oldest waiting chat.

Results go to docs/benchmarks.md between `<!-- routing:start -->` and `<!-- routing:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import event, text

import services.routing
from bench.duplicates import with_database
from bench.e2e import (
    CPU_GROUPS,
    MACHINE,
    background_load,
    cpu_model,
    cpu_snapshot,
    git_commit,
    log,
    pct,
)
from bench.options import add_scratch_database_options
from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatCompleted, ChatOpened
from libs.common.settings import Settings
from services.routing import service
from services.routing.models import Base, QueueIn, RoutingRule

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
MARKS = ("<!-- routing:start -->", "<!-- routing:end -->")
SCHEMA = "routing"
BARE = "bare"
TABLES = ("queues", "queue_members", "agents", "assignments", "offers", "outbox")
OPENED_BATCH = 200
CPU_BENCH, CPU_PG = CPU_GROUPS[3], CPU_GROUPS[0]


@dataclass
class Window:
    """What one stretch of work cost: wall time, offers made, CPU by who spent it."""

    seconds: float = 0.0
    offers: int = 0
    cycles: int = 0
    stale: int = 0  # accepts of offers withdrawn meanwhile (a 409 in the product)
    statements: int = 0  # SQL statements sent (BEGIN and COMMIT aside)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: Window) -> None:
        self.seconds += other.seconds
        self.offers += other.offers
        self.cycles += other.cycles
        self.stale += other.stale
        self.statements += other.statements
        for key, value in other.cpu.items():
            self.cpu[key] = self.cpu.get(key, 0.0) + value

    @property
    def rate(self) -> float:
        return self.offers / self.seconds if self.seconds else 0.0


@dataclass
class Results:
    queued: Window = field(default_factory=Window)
    activation: Window = field(default_factory=Window)
    first_offer_quiet: list[float] = field(default_factory=list)
    first_offer_bare_quiet: list[float] = field(default_factory=list)
    routing: Window = field(default_factory=Window)
    bare: Window = field(default_factory=Window)
    round_rates: list[tuple[float, float]] = field(default_factory=list)
    first_offer_loaded: list[float] = field(default_factory=list)
    first_offer_bare_loaded: list[float] = field(default_factory=list)
    first_offer_everyone: list[float] = field(default_factory=list)
    waiting: list[tuple[int, int]] = field(default_factory=list)  # (routing, bare) per round
    env: dict[str, str] = field(default_factory=dict)


class Meter:
    """CPU seconds spent during a stretch of work: the machine, this process, and our
    database's PostgreSQL backends (the rest is other people's)."""

    def __init__(self, database: str) -> None:
        self.database = database

    @contextlib.asynccontextmanager
    async def measure(self, window: Window) -> Any:
        before, started = cpu_snapshot({}, self.database), time.perf_counter()
        yield
        window.seconds += time.perf_counter() - started
        after = cpu_snapshot({}, self.database)
        for (group, pid), value in after.items():
            window.cpu[group] = window.cpu.get(group, 0.0) + value - before.get((group, pid), 0.0)


# --- routing, through its service functions ---------------------------------------------


class Routing:
    """routing's tables and functions, and the offers its committed events announced."""

    def __init__(
        self, db: Database, agents: list[str], capacity: int, rule: RoutingRule = "least_busy"
    ) -> None:
        self.db = db
        self.agents = agents
        self.capacity = capacity
        self.rule = rule
        self.queue_id = ""
        self.offers: dict[tuple[str, str], None] = {}  # (chat, agent) standing, in order
        self.made = 0  # chat.offered events committed so far
        self.statements = 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        self.statements += 1

    async def tx(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        async with self.db.transaction() as session:
            result = await work(session)
        self._heard()
        return result

    def _heard(self) -> None:
        """Read what routing announced (what consoles would be pushed), as the relay would."""
        rows, self.db.committed[:] = list(self.db.committed), []
        for _, envelope in rows:
            data, kind = envelope.data, envelope.type
            if kind == "chat.offered":
                self.made += 1
                self.offers[data["chat_id"], data["agent_id"]] = None
            elif kind in ("chat.offer_withdrawn", "chat.offer_expired", "chat.accepted"):
                self.offers.pop((data["chat_id"], data["agent_id"]), None)

    async def setup(self) -> None:
        async def create(session: Any) -> None:
            queue = await service.create_queue(
                session,
                QueueIn(
                    name=self.rule,
                    agent_ids=self.agents,
                    routing_rule=self.rule,
                    capacity=self.capacity,
                    accept_timeout_s=3600,  # no offer lapses during the run: no clock runs
                    reply_timeout_s=3600,
                ),
            )
            self.queue_id = queue.id

        await self.tx(create)

    async def waiting(self) -> int:
        async with self.db.sessions() as session:
            return int(
                await session.scalar(
                    text(
                        "SELECT count(*) FROM assignments WHERE queue_id = :queue"
                        " AND state = 'queued'"
                    ),
                    {"queue": self.queue_id},
                )
                or 0
            )

    async def top_up(self, backlog: int) -> int:
        """Queue new chats until `backlog` wait; how many were queued."""
        missing = backlog - await self.waiting()
        start = utcnow()
        for first in range(0, max(0, missing), OPENED_BATCH):
            batch = [
                ChatOpened(
                    chat_id=new_id(),
                    contact_id=new_id(),
                    channel_id="bench-channel",
                    queue_id=self.queue_id,
                    platform="telegram",
                    opened_at=start + timedelta(microseconds=first + n),
                )
                for n in range(min(OPENED_BATCH, missing - first))
            ]
            async with driver_transaction(self.db) as tx:  # as routing's consumer does
                await service.queue_chats(tx, batch)
            self._heard()
        return max(0, missing)

    async def activate(self, agent: str) -> float | None:
        """The agent turns active; seconds until their first offer is committed, or None if
        they were offered nothing."""
        before = self.made
        started = time.perf_counter()
        await self.tx(lambda session: service.set_status(session, agent, "active"))
        elapsed = time.perf_counter() - started
        return None if self.made == before else elapsed

    async def deactivate(self, agent: str) -> None:
        await self.tx(lambda session: service.set_status(session, agent, "inactive"))

    def take(self, rng: random.Random) -> tuple[str, str] | None:
        """A standing offer for a console to accept (not one another console has taken)."""
        if not self.offers:
            return None
        key = next(iter(self.offers))
        del self.offers[key]
        return key

    async def cycle(self, chat_id: str, agent: str) -> bool:
        """Accept, then complete (the slot goes to the next waiting chat); False if the offer
        was withdrawn meanwhile."""
        try:
            await self.tx(lambda session: service.accept(session, chat_id, agent))
        except service.NotOffered:
            return False
        completed = ChatCompleted(
            chat_id=chat_id, agent_id=agent, completed_by=agent, completed_at=utcnow()
        )
        await self.tx(lambda session: service.close_chat(session, completed))
        return True


# --- the baseline: the same writes in bare SQL ------------------------------------------


class Bare:
    """The cycle's writes, hand-written on asyncpg, on a copy of routing's tables."""

    def __init__(self, pool: Any, queue_id: str, agents: list[str], capacity: int):
        self.pool = pool
        self.queue_id = queue_id
        self.agents = agents
        self.capacity = capacity
        self.offers: dict[tuple[str, str], None] = {}
        self.made = 0
        self.statements = 0

    def count(self, record: Any) -> None:
        """asyncpg's query logger: every statement but the transactions' own."""
        if record.query not in ("BEGIN;", "COMMIT;", "ROLLBACK;"):
            self.statements += 1

    @staticmethod
    async def copy(conn: asyncpg.Connection) -> None:
        """`bare.*`: routing's tables with their indexes, and their rows."""
        await conn.execute(f"DROP SCHEMA IF EXISTS {BARE} CASCADE; CREATE SCHEMA {BARE}")
        for table in TABLES:
            await conn.execute(
                f"CREATE TABLE {BARE}.{table} (LIKE {SCHEMA}.{table} INCLUDING ALL);"
                f"INSERT INTO {BARE}.{table} SELECT * FROM {SCHEMA}.{table}"
            )
        await conn.execute(f"ANALYZE {BARE}.assignments; ANALYZE {BARE}.offers")

    async def load(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT chat_id, agent_id FROM offers ORDER BY offered_at")
        self.offers = {(r["chat_id"], r["agent_id"]): None for r in rows}

    async def waiting(self) -> int:
        async with self.pool.acquire() as conn:
            return int(
                await conn.fetchval("SELECT count(*) FROM assignments WHERE state = 'queued'")
            )

    async def top_up(self, backlog: int) -> None:
        missing = backlog - await self.waiting()
        if missing <= 0:
            return
        now = utcnow()
        rows = [
            (new_id(), self.queue_id, new_id(), "queued", now + timedelta(microseconds=n), now)
            for n in range(missing)
        ]
        async with self.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "assignments",
                records=rows,
                columns=[
                    "chat_id",
                    "queue_id",
                    "contact_id",
                    "state",
                    "queued_at",
                    "awaiting_reply_since",
                ],
                schema_name=BARE,
            )

    @staticmethod
    def _event(kind: str, **data: Any) -> tuple[str, datetime, datetime]:
        now = utcnow()
        envelope = {"id": new_id(), "type": kind, "source": "routing", "time": now, "data": data}
        return orjson.dumps(envelope).decode(), now, now + timedelta(seconds=30)

    async def _offer(self, conn: asyncpg.Connection, agent: str, count: int) -> list[str]:
        """Offer the `count` oldest waiting chats to the agent (the queue locked)."""
        now = utcnow()
        chats = await conn.fetch(
            "SELECT chat_id, contact_id FROM assignments WHERE queue_id = $1 AND state = 'queued'"
            " ORDER BY queued_at, chat_id LIMIT $2",
            self.queue_id,
            count,
        )
        if not chats:
            return []
        await conn.executemany(
            "INSERT INTO offers (chat_id, agent_id, queue_id, offered_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(c["chat_id"], agent, self.queue_id, now, now + timedelta(hours=1)) for c in chats],
        )
        await conn.executemany(
            "UPDATE assignments SET state = 'offered', offered_at = $2 WHERE chat_id = $1",
            [(c["chat_id"], now) for c in chats],
        )
        await conn.executemany(
            "INSERT INTO outbox (envelope, created_at, leased_until) VALUES ($1, $2, $3)",
            [self._event("chat.offered", chat_id=c["chat_id"], agent_id=agent) for c in chats],
        )
        return [c["chat_id"] for c in chats]

    def _made(self, agent: str, chat_ids: list[str]) -> None:
        self.made += len(chat_ids)
        for chat_id in chat_ids:
            self.offers[chat_id, agent] = None

    async def _lock(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT id FROM queues WHERE id = $1 FOR UPDATE", self.queue_id)

    def take(self, rng: random.Random) -> tuple[str, str] | None:
        if not self.offers:
            return None
        key = next(iter(self.offers))
        del self.offers[key]
        return key

    async def cycle(self, chat_id: str, agent: str) -> bool:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await self._lock(conn)
                taken = await conn.fetchval(
                    "DELETE FROM offers WHERE chat_id = $1 AND agent_id = $2 RETURNING 1",
                    chat_id,
                    agent,
                )
                if not taken:
                    return False
                now = utcnow()
                await conn.execute(
                    "UPDATE assignments SET state = 'assigned', agent_id = $2, accepted_at = $3"
                    " WHERE chat_id = $1",
                    chat_id,
                    agent,
                    now,
                )
                await conn.execute(
                    "UPDATE agents SET last_accepted_at = $2 WHERE id = $1", agent, now
                )
                await conn.execute(
                    "INSERT INTO outbox (envelope, created_at, leased_until) VALUES ($1, $2, $3)",
                    *self._event("chat.accepted", chat_id=chat_id, agent_id=agent),
                )
            async with conn.transaction():
                await self._lock(conn)
                await conn.execute(
                    "UPDATE assignments SET state = 'closed', closed_at = $2 WHERE chat_id = $1",
                    chat_id,
                    utcnow(),
                )
                made = await self._offer(conn, agent, 1)
        self._made(agent, made)
        return True

    async def activate(self, agent: str) -> float | None:
        started = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock(conn)
            await conn.execute("UPDATE agents SET status = 'active' WHERE id = $1", agent)
            load = await conn.fetchval(
                "SELECT (SELECT count(*) FROM assignments WHERE agent_id = $1"
                " AND state = 'assigned') + (SELECT count(*) FROM offers WHERE agent_id = $1)",
                agent,
            )
            made = await self._offer(conn, agent, self.capacity - load)
        elapsed = time.perf_counter() - started
        if not made:
            return None
        self._made(agent, made)
        return elapsed

    async def deactivate(self, agent: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock(conn)
            await conn.execute("UPDATE agents SET status = 'inactive' WHERE id = $1", agent)
            gone = await conn.fetch(
                "DELETE FROM offers WHERE agent_id = $1 RETURNING chat_id", agent
            )
            await conn.executemany(
                "UPDATE assignments SET state = 'queued', offered_at = NULL WHERE chat_id = $1",
                [(row["chat_id"],) for row in gone],
            )
            await conn.executemany(
                "INSERT INTO outbox (envelope, created_at, leased_until) VALUES ($1, $2, $3)",
                [
                    self._event("chat.offer_withdrawn", chat_id=r["chat_id"], agent_id=agent)
                    for r in gone
                ],
            )
        for row in gone:
            self.offers.pop((row["chat_id"], agent), None)


# --- the load ---------------------------------------------------------------------------


def offered(elapsed: float | None, agent: str) -> float:
    """A quiet activation's time: with no console at work, an active agent is always offered
    something from the backlog."""
    if elapsed is None:
        raise RuntimeError(f"{agent} turned active and was offered nothing")
    return elapsed


async def steady(
    subject: Routing | Bare, seconds: float, workers: int, rng: random.Random, toggled: list[float]
) -> Window:
    """`workers` consoles accept and complete offers for `seconds`; meanwhile agents go
    inactive and active again, one at a time, their activation timed into `toggled`."""
    window = Window()
    made_before, statements_before = subject.made, subject.statements
    stop = time.perf_counter() + seconds

    async def console() -> None:
        while time.perf_counter() < stop:
            offer = subject.take(rng)
            if offer is None:
                await asyncio.sleep(0.001)
                continue
            if await subject.cycle(*offer):
                window.cycles += 1
            else:
                window.stale += 1

    async def toggler() -> None:
        while time.perf_counter() < stop:
            agent = rng.choice(subject.agents)
            await subject.deactivate(agent)
            # The consoles may hold the agent's every slot (they take the oldest offers, often
            # one agent's): then nothing is offered and there is nothing to time.
            elapsed = await subject.activate(agent)
            if elapsed is not None:
                toggled.append(elapsed)

    await asyncio.gather(*(console() for _ in range(workers)), toggler())
    window.offers = subject.made - made_before
    window.statements = subject.statements - statements_before
    return window


async def run(args: argparse.Namespace) -> Results:
    results = Results()
    name = f"chatdesk_bench_routing_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    results.env = {
        "postgresql": str(await admin.fetchval("SHOW server_version")).split()[0],
        "python": platform.python_version(),
        "commit": git_commit(),
        "busy_before": f"{await background_load():.0%}",
        "loadavg_before": _loadavg(),
    }
    await admin.close()
    url = with_database(args.database_url, name)
    settings = Settings(DATABASE_URL=url, AMQP_URL=None, db_pool_size=args.workers + 2)
    migrations = Path(services.routing.__file__).parent / "migrations"
    db = Database(settings, SCHEMA, Base.metadata, migrations)
    meter = Meter(name)
    rng = random.Random(args.seed)
    agents = [f"agent-{n:03d}" for n in range(args.agents)]
    try:
        await db.migrate()
        routing = Routing(db, agents, args.capacity)
        await routing.setup()
        log(f"queueing {args.backlog:,} chats with every agent inactive")
        async with meter.measure(results.queued):
            results.queued.cycles = await routing.top_up(args.backlog)
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        log(f"{args.agents} agents turn active one after the other")
        async with meter.measure(results.activation):
            before = routing.made
            for agent in agents:
                results.first_offer_quiet.append(offered(await routing.activate(agent), agent))
            results.activation.offers = routing.made - before
        conn = await asyncpg.connect(url)
        await Bare.copy(conn)
        await conn.close()
        bare = Bare(None, routing.queue_id, agents, args.capacity)

        async def init(connection: asyncpg.Connection) -> None:
            connection.add_query_logger(bare.count)

        bare.pool = await asyncpg.create_pool(
            url,
            min_size=args.workers + 2,
            max_size=args.workers + 2,
            server_settings={"search_path": BARE},
            init=init,
        )
        await bare.load()
        # The baseline's quiet activation: the same 200 agents, from inactive, one by one.
        for agent in agents[: min(50, len(agents))]:
            await bare.deactivate(agent)
        for agent in agents[: min(50, len(agents))]:
            results.first_offer_bare_quiet.append(offered(await bare.activate(agent), agent))
        for n in range(args.rounds):
            await routing.top_up(args.backlog)
            await bare.top_up(args.backlog)
            waiting = (await routing.waiting(), await bare.waiting())
            results.waiting.append(waiting)
            log(f"round {n + 1}/{args.rounds}: {waiting[0]:,} / {waiting[1]:,} chats waiting")
            pair = []
            for subject, total, toggled in (
                (routing, results.routing, results.first_offer_loaded),
                (bare, results.bare, results.first_offer_bare_loaded),
            ):
                window = Window()
                async with meter.measure(window):
                    got = await steady(subject, args.seconds, args.workers, rng, toggled)
                got.seconds, got.cpu = window.seconds, window.cpu
                total.add(got)
                pair.append(got.rate)
                log(f"  {type(subject).__name__}: {got.rate:,.0f} offers/s")
            results.round_rates.append((pair[0], pair[1]))
        await bare.pool.close()
        log(f"the everyone rule: {args.agents} more agents and {args.backlog:,} more chats")
        everyone = Routing(
            db, [f"everyone-{n:03d}" for n in range(args.agents)], args.capacity, "everyone"
        )
        await everyone.setup()
        await everyone.top_up(args.backlog)
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        for agent in everyone.agents:
            results.first_offer_everyone.append(offered(await everyone.activate(agent), agent))
        results.env["loadavg_after"] = _loadavg()
    finally:
        await db.dispose()
        if not args.keep:
            admin = await asyncpg.connect(args.database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results


def _loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the report -------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> str:
    return f"{pct(values, q) * 1000:,.1f} ms" if values else "n/a"


def _cpu(window: Window) -> str:
    """CPU per offer, and the share of the machine others used meanwhile."""
    machine = window.cpu.get(MACHINE, 0.0)
    mine = window.cpu.get(CPU_BENCH, 0.0)
    pg = window.cpu.get(CPU_PG, 0.0)
    others = max(0.0, machine - mine - pg)
    cores = os.cpu_count() or 1
    per_offer = (mine + pg) / window.offers * 1000 if window.offers else float("nan")
    return (
        f"{mine / window.seconds:.0%} / {pg / window.seconds:.0%} of a core; "
        f"{per_offer:.2f} ms CPU per offer; others {others / window.seconds / cores:.0%} "
        "of the machine"
    )


def report(results: Results, args: argparse.Namespace) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = results.env
    r, b = results.routing, results.bare
    ratio = r.rate / b.rate if b.rate else float("nan")
    lines = [
        "## Routing: offers per second, and an agent's first offer (`make bench-routing`, "
        "`bench/routing.py`)",
        "",
        f"Run {now} on commit {env['commit']}. Machine: {os.cpu_count()} cores ({cpu_model()}), "
        f"PostgreSQL {env['postgresql']}, Python {env['python']}. Other work on the machine just "
        f"before the run: {env['busy_before']} of all cores; load average {env['loadavg_before']} "
        f"before, {env['loadavg_after']} after (1 / 5 / 15 min).",
        "",
        f"{args.agents} agents in one least-busy queue (capacity {args.capacity}), "
        f"{args.backlog:,} chats waiting; routing's own service functions in this process on a "
        "fresh database (no HTTP, no bus: see below).",
        "",
        "| figure | routing | bare SQL baseline | routing / baseline |",
        "|---|---:|---:|---:|",
        f"| **offers per second**, steady (accept + complete → next offer), {args.workers} "
        f"consoles at once | **{r.rate:,.0f}** | {b.rate:,.0f} | {ratio:.0%} |",
        f"| agent turns active → first offer, quiet, p50 | "
        f"{_ms(results.first_offer_quiet, 50)} | {_ms(results.first_offer_bare_quiet, 50)} | |",
        f"| agent turns active → first offer, quiet, **p99** | "
        f"**{_ms(results.first_offer_quiet, 99)}** | {_ms(results.first_offer_bare_quiet, 99)} "
        "| |",
        f"| agent turns active → first offer, under the steady load, p50 | "
        f"{_ms(results.first_offer_loaded, 50)} | {_ms(results.first_offer_bare_loaded, 50)} | |",
        f"| agent turns active → first offer, under the steady load, **p99** | "
        f"**{_ms(results.first_offer_loaded, 99)}** | "
        f"{_ms(results.first_offer_bare_loaded, 99)} | |",
        "",
        "Details:",
        "",
        "| | routing | bare SQL |",
        "|---|---:|---:|",
        "| offers per second in each round | "
        + ", ".join(f"{x:,.0f}" for x, _ in results.round_rates)
        + " | "
        + ", ".join(f"{y:,.0f}" for _, y in results.round_rates)
        + " |",
        f"| SQL statements per offer (BEGIN and COMMIT aside) | "
        f"{r.statements / max(1, r.offers):.1f} | {b.statements / max(1, b.offers):.1f} |",
        f"| accept + complete cycles / offers withdrawn before their accept | "
        f"{r.cycles:,} / {r.stale:,} | {b.cycles:,} / {b.stale:,} |",
        f"| activations timed (quiet / under load) | {len(results.first_offer_quiet)} / "
        f"{len(results.first_offer_loaded)} | {len(results.first_offer_bare_quiet)} / "
        f"{len(results.first_offer_bare_loaded)} |",
        "| chats waiting at each round's start | "
        + ", ".join(f"{x:,}" for x, _ in results.waiting)
        + " | "
        + ", ".join(f"{y:,}" for _, y in results.waiting)
        + " |",
        f"| CPU during the steady rounds: this process / our PostgreSQL backends | {_cpu(r)} | "
        f"{_cpu(b)} |",
        f"| the everyone rule, quiet (another queue: {args.agents} more agents, "
        f"{args.backlog:,} more chats): agent turns active → first offer, p50 / p99 | "
        f"{_ms(results.first_offer_everyone, 50)} / {_ms(results.first_offer_everyone, 99)} "
        "| |",
        f"| {args.agents} agents turning active one by one, quiet: offers per second | "
        f"{results.activation.rate:,.0f} ({results.activation.offers:,} offers) | |",
        f"| queueing the backlog (`queue_chats`, batches of {OPENED_BATCH}): chats per second | "
        f"{results.queued.cycles / results.queued.seconds:,.0f} | |",
        "",
        "What the figures are: *offers per second* is the `chat.offered` events routing "
        f"committed per second of wall time while {args.workers} agents' consoles at once each "
        "took a standing offer, accepted it (`accept`) and completed it (`close_chat`), which "
        "hands the freed slot to the oldest waiting chat, while one agent after another went "
        "inactive and active again (each activation offers that agent up to "
        f"{args.capacity} chats). *Agent turns active → first offer*: the duration of "
        "`set_status(active)`, which locks the agent's queues, makes the offers and commits "
        "them with the status change; under load an agent whose slots the consoles hold is "
        "offered nothing, and that activation is not timed (in the product, the gateway's HTTP "
        "call to routing comes "
        "before it, and the outbox relay, the bus and the push to the console after: "
        "`bench/e2e.py` measures those hops). *Bare SQL baseline*: the same cycle, the same "
        "concurrency and the same queue row lock, as hand-written asyncpg statements on a copy "
        "of routing's tables (same rows and indexes), writing the same rows (offers, "
        "assignments, the agent's last acceptance, one outbox row per event) without "
        "routing's choices (who is least busy, passed-over agents, the agent's other queues); "
        f"rounds of {args.seconds:g} s alternate between the two so that both see the same "
        "machine. No clock runs (offers do not lapse), and nothing relays the outbox.",
        "",
        f"Command: `python -m bench.routing --agents {args.agents} --backlog {args.backlog} "
        f"--capacity {args.capacity} --workers {args.workers} --rounds {args.rounds} "
        f"--seconds {args.seconds:g}`.",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section, or add it before the notes by hand."""
    start, end = MARKS
    text = path.read_text()
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        head, sep, tail = text.partition("## Notes by hand")
        text = head + block + "\n\n" + sep + tail if sep else text + "\n" + block + "\n"
    path.write_text(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.routing",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000, help="chats waiting")
    parser.add_argument("--capacity", type=int, default=5, help="chats per agent")
    parser.add_argument("--workers", type=int, default=8, help="consoles working at once")
    parser.add_argument("--rounds", type=int, default=3, help="steady rounds of each")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a round")
    parser.add_argument("--seed", type=int, default=1)
    add_scratch_database_options(parser)
    args = parser.parse_args(argv)
    if not 2 <= args.agents <= 10_000:
        parser.error("--agents must be within [2, 10000]")
    if not 1 <= args.capacity <= 100:
        parser.error("--capacity must be within [1, 100]")
    if args.backlog < args.agents * args.capacity:
        parser.error("--backlog must fill every agent's capacity")
    if not 1 <= args.workers <= 64 or not 1 <= args.rounds <= 20 or args.seconds <= 0:
        parser.error("--workers within [1, 64], --rounds within [1, 20], --seconds > 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    section = report(results, args)
    print(section)
    if args.no_write:
        log("not writing docs (--no-write)")
    else:
        write_section(args.output, section)
        log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
