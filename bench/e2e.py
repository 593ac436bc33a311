"""End-to-end benchmark: Telegram webhook -> ingest -> contacts -> chat -> routing -> gateway WS.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ .venv/bin/python -m bench.e2e

(`make bench`). The product runs distributed (one process per service) on a fresh database and
vhost, as tests/support starts it. Agents in one queue keep WebSockets open; Telegram updates are
posted to the webhook, and a message counts as visible when an agent's WebSocket shows it:

- the `chat.message_received` event carrying its text (unique per message), or
- for the message that opened a chat, the `chat.offered` event of its chat if that came first:
  that message is published before routing offers the chat (agent_id null), and the console loads
  the chat when it is offered. Which message opened a chat is read after the run through the
  console API (the inbound message stored at the chat's `opened_at`).
- Any other message that no `chat.message_received` carried reached no agent live ("unpushed",
  counted, and timed at its chat's offer, a lower bound).

Customers carry realistic names (`bench/people.py`): contacts searches for duplicates of every new
chat's contact, and the names decide what that search finds.

Runs: (1) throughput, N updates from M users at full speed with bounded concurrency; (2) latency,
paced at R msg/s for D seconds, new and returning customers mixed; (3) a RabbitMQ baseline on its
own vhost of the same broker: aio-pika publish with confirms, and publish + consume with manual ack;
(4) the floor (`bench/floor.py`): the same load through a bare pipeline with chatdesk's hops and
guarantees and none of its logic, on its own database and vhost.
Results go to docs/benchmarks.md between `<!-- e2e:start -->` and `<!-- e2e:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiohttp
import asyncpg
from websockets.asyncio.client import ClientConnection, connect

from bench.floor import Floor, run_floor
from bench.floor import summary as floor_summary
from bench.load import (
    CLK_TCK,
    SECRET,
    Customers,
    LagMonitor,
    Plan,
    Post,
    Tracker,
    busy_ticks,
    cpu_seconds,
    latency_plan,
    log,
    ms,
    pct,
    post_flat_out,
    post_paced,
    rate,
    read_socket,
    throughput_plan,
)
from libs.common.settings import Settings
from tests.support import backends
from tests.support.fake_telegram import FakeTelegram, serve
from tests.support.product import ADMIN_PASSWORD, ROOT, Console, Product, running

BOT_TOKEN = "123456:BENCH-token_abc"
AGENT_PASSWORD = "bench-agent-password"
MAX_CAPACITY = 100  # routing's QueueIn: at most 100 simultaneous chats per agent
DOC = ROOT / "docs" / "benchmarks.md"
POOL_SIZE = Settings.model_fields["db_pool_size"].default
MARK_START, MARK_END = "<!-- e2e:start -->", "<!-- e2e:end -->"
TARGET_RATE, TARGET_P99 = 300.0, 1.0
PG_STATS_DELAY = 11.0


# --- accounting ----------------------------------------------------------------------------


@dataclass
class Outcome:
    plan: Plan
    ok: list[Post]
    failed: int
    visible: dict[str, tuple[float, str]]  # text -> (time, "pushed" | "offered")
    chat_of: dict[str, str]  # text -> chat id
    openers: dict[str, str]  # new chat id -> the text of the message that opened it
    new_chats: int
    unpushed_extra: int
    split_users: int
    not_visible: int
    settled: str
    bench_lag: list[float]
    samples: list[Sample] = field(default_factory=list)
    stages: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    pg: dict[str, float] = field(default_factory=dict)  # counter increments during the run

    def cpu(self) -> dict[str, float]:
        """CPU seconds by process from just before the first POST to the last message shown."""
        if not self.samples:
            return {}
        end = next((s for s in self.samples if s.t >= self.last_visible), self.samples[-1])
        used: dict[str, float] = defaultdict(float)
        for (group, pid), seconds in end.cpu.items():
            used[group] += seconds - self.samples[0].cpu.get((group, pid), 0.0)
        return dict(used)

    @property
    def first_start(self) -> float:
        return min(p.origin for p in self.plan.posts)

    @property
    def last_end(self) -> float:
        return max(p.end for p in self.plan.posts)

    @property
    def last_visible(self) -> float:
        return max((t for t, _ in self.visible.values()), default=math.nan)

    def latencies(self, how: str | None = None) -> list[float]:
        return [
            self.visible[p.text][0] - p.origin
            for p in self.ok
            if p.text in self.visible and how in (None, self.visible[p.text][1])
        ]

    def webhook_times(self) -> list[float]:
        return [p.end - p.start for p in self.ok]


async def settle(
    tracker: Tracker,
    plan: Plan,
    chats_before: set[str],
    sampler: Sampler,
    quiet_s: float,
    timeout: float,
) -> str:
    """Wait until every accepted message is visible, or nothing moved for `quiet_s`; either way
    only once the pipeline is drained (no queue or outbox backlog in the last two samples).

    "Every message visible" while running: all new chats offered, and the messages not yet
    pushed are at most one per new customer (their chat's first, which `chat.offered` shows).
    """
    expected = [p for p in plan.posts if p.status == 200]
    new_users = plan.users_new
    deadline = time.monotonic() + timeout
    tracker.last_event = max(tracker.last_event, time.monotonic())
    while True:
        await asyncio.sleep(0.1)
        if time.monotonic() > deadline:
            return "drain timeout"
        if not sampler.drained():
            continue
        unseen = [p.user for p in expected if p.text not in tracker.seen]
        new_chats = len(tracker.offered.keys() - chats_before)
        if (
            new_chats >= plan.new_users
            and len(set(unseen)) == len(unseen)
            and new_users.issuperset(unseen)
        ):
            return "complete"
        if time.monotonic() - tracker.last_event > quiet_s:
            return f"drained, quiet for {quiet_s:.0f} s"


async def reconcile(
    admin: Console,
    tracker: Tracker,
    plan: Plan,
    chats_before: set[str],
    settled: str,
    lag: list[float],
) -> Outcome:
    """Attribute every message to the WS event that first showed it (see the module docstring).

    The messages of each new chat come from the console API; the one that opened the chat is
    the one stored at the chat's `opened_at`.
    """
    new_chats = [c for c in tracker.offered if c not in chats_before]
    limit = asyncio.Semaphore(8)

    async def contents(chat_id: str) -> tuple[str | None, list[str]]:
        async with limit:
            chat = await admin.http.get(f"/api/chats/{chat_id}")
            messages = await admin.http.get(f"/api/chats/{chat_id}/messages")
        chat.raise_for_status()
        messages.raise_for_status()
        inbound = [m for m in messages.json() if m["direction"] == "in"]
        opened = datetime.fromisoformat(chat.json()["opened_at"])
        opener = next(
            (m["text"] for m in inbound if datetime.fromisoformat(m["created_at"]) == opened),
            inbound[0]["text"] if inbound else None,
        )
        return opener, [m["text"] for m in inbound]

    found = await asyncio.gather(*(contents(c) for c in new_chats))
    ours = {p.text: p for p in plan.posts}
    visible: dict[str, tuple[float, str]] = {
        text: (t, "pushed") for text, t in tracker.seen.items() if text in ours
    }
    chat_of = {text: tracker.chat_of[text] for text in visible}
    openers: dict[str, str] = {}
    unpushed_extra = 0
    for chat_id, (opener, texts) in zip(new_chats, found, strict=True):
        offered = tracker.offered[chat_id]
        for text in texts:
            if text not in ours:
                continue
            chat_of[text] = chat_id
            if text == opener:
                openers[chat_id] = text
                if offered <= visible.get(text, (math.inf, ""))[0]:
                    visible[text] = (offered, "offered")
            elif text not in visible:
                unpushed_extra += 1
                visible[text] = (offered, "offered")
    chats_of_user: dict[int, set[str]] = defaultdict(set)
    for text, chat_id in chat_of.items():
        chats_of_user[ours[text].user].add(chat_id)
    ok = [p for p in plan.posts if p.status == 200]
    return Outcome(
        plan=plan,
        ok=ok,
        failed=len(plan.posts) - len(ok),
        visible=visible,
        chat_of=chat_of,
        openers=openers,
        new_chats=len(new_chats),
        unpushed_extra=unpushed_extra,
        split_users=sum(1 for chats in chats_of_user.values() if len(chats) > 1),
        not_visible=sum(1 for p in ok if p.text not in visible),
        settled=settled,
        bench_lag=lag,
    )


# --- CPU by process ------------------------------------------------------------------------


def _cmdline(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def service_pids(product: Product) -> dict[str, int]:
    """The product's processes, one per service (`python -m services <name>`)."""
    return {name: process.pid for name, process in product.processes.items()}


MACHINE = "machine busy (all cores)"
CPU_GROUPS = (
    "postgres (bench db backends)",
    "postgres (wal, checkpoint, ...)",
    "rabbitmq",
    "bench client",
)


def cpu_snapshot(services: dict[str, int], database: str) -> dict[tuple[str, int], float]:
    """CPU seconds so far by (group, pid): each service, this process, PostgreSQL (our
    database's backends and the server's own background processes), RabbitMQ, and the whole
    machine (busy time of all cores, pid 0)."""
    snap = {(name, pid): cpu_seconds(pid) for name, pid in services.items()}
    snap["bench client", os.getpid()] = cpu_seconds(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        group = None
        if comm == "postgres":
            args = " ".join(_cmdline(entry.name))
            if f" {database} " in args:
                group = CPU_GROUPS[0]
            elif "postgres: " in args and "(" not in args:  # no client address: not a backend
                group = CPU_GROUPS[1]
        elif comm in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"):
            group = CPU_GROUPS[2]
        if group:
            snap[group, int(entry.name)] = cpu_seconds(entry.name)
    snap[MACHINE, 0] = busy_ticks()[0] / CLK_TCK
    return snap


@dataclass
class Sample:
    t: float
    cpu: dict[tuple[str, int], float]
    queues: dict[str, int]  # RabbitMQ consumer group -> messages ready
    outboxes: dict[str, int]  # service -> outbox rows not yet relayed


class Sampler:
    """Every `period` s: CPU by process, each consumer group's ready messages, each outbox."""

    def __init__(
        self, services: dict[str, int], database_url: str, amqp_url: str, period: float = 0.5
    ) -> None:
        self.services = services
        self.database_url = database_url
        self.database = database_url.rsplit("/", 1)[1]
        self.amqp_url = amqp_url
        self.period = period
        self.samples: list[Sample] = []

    async def run(self) -> None:
        vhost = unquote(urlsplit(self.amqp_url).path[1:])
        listed = await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "--no-table-headers"],
            capture_output=True,
            text=True,
        )
        names = sorted(
            n for n in listed.stdout.split() if not n.endswith((".retry", ".dlq")) and "." in n
        )
        outbox_sql = " UNION ALL ".join(
            f"SELECT '{name}', count(*) FROM \"{name}\".outbox" for name in self.services
        )
        # No parallel workers: the outboxes' statistics are stale within a run, and counting
        # them in parallel forked two worker processes every sample, CPU charged to the product.
        pg = await asyncpg.connect(
            self.database_url, server_settings={"max_parallel_workers_per_gather": "0"}
        )
        mq = await aio_pika.connect(self.amqp_url)
        try:
            channel = await mq.channel()
            while True:
                queues = {}
                for name in names:
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except aio_pika.exceptions.AMQPError:
                        channel = await mq.channel()
                        continue
                    queues[name.split(".", 1)[1]] = queue.declaration_result.message_count or 0
                outboxes = {r[0]: r[1] for r in await pg.fetch(outbox_sql)}
                self.samples.append(
                    Sample(
                        time.monotonic(),
                        cpu_snapshot(self.services, self.database),
                        queues,
                        outboxes,
                    )
                )
                await asyncio.sleep(self.period)
        finally:
            await pg.close()
            await mq.close()

    def take(self) -> list[Sample]:
        samples, self.samples = self.samples, []
        return samples

    def drained(self) -> bool:
        """No message ready in any queue and no outbox row, in the last two samples."""
        last = self.samples[-2:]
        return len(last) == 2 and not any(
            any(s.queues.values()) or any(s.outboxes.values()) for s in last
        )


async def pg_counters(conn: asyncpg.Connection) -> dict[str, float]:
    """The product database's activity counters (PostgreSQL's cumulative statistics)."""
    row = await conn.fetchrow(
        "SELECT xact_commit + xact_rollback AS transactions, sessions AS connections,"
        " tup_returned AS rows_returned, tup_inserted + tup_updated + tup_deleted AS rows_written"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    counters = {k: float(v) for k, v in dict(row or {}).items()}
    for r in await conn.fetch(
        "SELECT schemaname || '.' || relname AS name, seq_scan, coalesce(idx_scan, 0) AS idx_scan,"
        " seq_tup_read + coalesce(idx_tup_fetch, 0) AS rows_read FROM pg_stat_user_tables"
    ):
        for column in ("seq_scan", "idx_scan", "rows_read"):
            counters[f"{r['name']}:{column}"] = float(r[column])
    return counters


STAGES_PUSHED = """
SELECT m.text, m.created_at AS stored, e.created_at AS emitted, p.processed_at AS pushing
FROM chat.messages m
JOIN gateway.agent_events e
  ON e.type = 'chat.message_received' AND e.data -> 'message' ->> 'id' = m.id
LEFT JOIN gateway.processed_events p
  ON p.event_id = e.source_event_id AND p.consumer = 'gateway.push_to_agents'
WHERE m.text = ANY($1::text[])
"""

STAGES_OFFERED = """
SELECT a.chat_id, a.queued_at AS stored, a.offered_at AS emitted, p.processed_at AS pushing
FROM routing.assignments a
JOIN gateway.agent_events e ON e.type = 'chat.offered' AND e.data ->> 'chat_id' = a.chat_id
LEFT JOIN gateway.processed_events p
  ON p.event_id = e.source_event_id AND p.consumer = 'gateway.push_to_agents'
WHERE a.chat_id = ANY($1::text[])
"""

STAGE_NAMES = (
    "update sent (paced: due) -> ingest accepted",
    "ingest -> chat/routing emits the event",
    "emitted -> gateway handler starts",
    "gateway handler -> WebSocket frame",
)


async def stage_breakdown(
    database_url: str, tracker: Tracker, outcome: Outcome, clock_offset: float
) -> dict[str, dict[str, list[float]]]:
    """Split each latency at the product's own timestamps (wall clock, same machine):
    ingest's receipt (stored as the message's `created_at`, or the chat's `queued_at` in
    routing), the event's time (`agent_events.created_at`: when chat, or routing for an offer,
    emitted it) and gateway's inbox record (when its handler started)."""
    by_text = {p.text: p for p in outcome.ok}
    first_post = {  # new chat -> when its first message was sent, if the offer showed it
        chat: by_text[text].origin
        for chat, text in outcome.openers.items()
        if text in by_text and outcome.visible.get(text, (0, ""))[1] == "offered"
    }
    conn = await asyncpg.connect(database_url)
    try:
        pushed = await conn.fetch(
            STAGES_PUSHED, [t for t, (_, how) in outcome.visible.items() if how == "pushed"]
        )
        offered = await conn.fetch(STAGES_OFFERED, list(first_post))
    finally:
        await conn.close()

    def mono(stamp: datetime | None) -> float:
        return math.nan if stamp is None else stamp.timestamp() - clock_offset

    stages: dict[str, dict[str, list[float]]] = {}
    for how, rows, start_of, shown_of in (
        (
            "pushed",
            pushed,
            lambda r: by_text[r["text"]].origin,
            lambda r: tracker.seen.get(r["text"], math.nan),
        ),
        (
            "offered",
            offered,
            lambda r: first_post[r["chat_id"]],
            lambda r: tracker.offered.get(r["chat_id"], math.nan),
        ),
    ):
        columns: dict[str, list[float]] = {name: [] for name in STAGE_NAMES}
        for row in rows:
            marks = [
                start_of(row),
                mono(row["stored"]),
                mono(row["emitted"]),
                mono(row["pushing"]),
                shown_of(row),
            ]
            for name, a, b in zip(STAGE_NAMES, marks, marks[1:], strict=False):
                if not (math.isnan(a) or math.isnan(b)):
                    columns[name].append(b - a)
        stages[how] = columns
    return stages


# --- the RabbitMQ baseline -----------------------------------------------------------------


@dataclass
class Baseline:
    publish_rate: float
    end_to_end_rate: float
    latencies: list[float]
    paced_rate: float
    messages: int
    body_bytes: int
    in_flight: int


def _consumer_main(url: str, queue: str, count: int, conn: Connection) -> None:
    asyncio.run(_consume(url, queue, count, conn))


async def _consume(url: str, queue_name: str, count: int, conn: Connection) -> None:
    """A separate process, like the product's consumers: prefetch 50, manual ack."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=50)
    queue = await channel.get_queue(queue_name)
    done = asyncio.Event()
    latencies: list[float] = []
    first = math.nan

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal first
        received = time.monotonic()
        if math.isnan(first):
            first = received
        latencies.append(received - struct.unpack_from("!d", message.body)[0])
        await message.ack()
        if len(latencies) >= count:
            done.set()

    await queue.consume(on_message)
    conn.send("ready")
    await done.wait()
    conn.send({"first": first, "last": time.monotonic(), "latencies": latencies})
    await connection.close()


async def run_baseline(
    amqp_url: str, messages: int, in_flight: int, per_s: float, seconds: float
) -> Baseline:
    body_size = 1024
    padding = os.urandom(body_size - 8)

    def body() -> bytes:
        return struct.pack("!d", time.monotonic()) + padding

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            "bench", aio_pika.ExchangeType.TOPIC, durable=True
        )
        # Like the product's consumer groups: a durable quorum queue bound to a topic exchange.
        queue = await channel.declare_queue(
            "bench.baseline", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key="bench.#")

        async def publish(count: int) -> None:
            for start in range(0, count, in_flight):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body(),
                                message_id=str(start + k),
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key="bench.message",
                        )
                        for k in range(min(in_flight, count - start))
                    )
                )

        started = time.monotonic()
        await publish(messages)
        publish_rate = messages / (time.monotonic() - started)
        await queue.purge()

        async def with_consumer(count: int, load: Any) -> dict[str, Any]:
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            process = context.Process(
                target=_consumer_main, args=(amqp_url, queue.name, count, child), daemon=True
            )
            process.start()
            try:
                if not await asyncio.to_thread(parent.poll, 60):
                    raise TimeoutError("baseline consumer did not start")
                parent.recv()
                started = time.monotonic()
                await load()
                if not await asyncio.to_thread(parent.poll, 120):
                    raise TimeoutError("baseline consumer did not finish")
                result: dict[str, Any] = parent.recv()
                result["started"] = started
                return result
            finally:
                process.join(10)
                if process.is_alive():
                    process.kill()

        both = await with_consumer(messages, lambda: publish(messages))
        end_to_end_rate = messages / (both["last"] - both["started"])

        paced = max(1, int(per_s * seconds))

        async def publish_paced() -> None:
            begin = time.monotonic() + 0.05
            for k in range(paced):
                if (delay := begin + k / per_s - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                await exchange.publish(
                    aio_pika.Message(body(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="bench.message",
                )

        slow = await with_consumer(paced, publish_paced)
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
    finally:
        await connection.close()
    return Baseline(
        publish_rate=publish_rate,
        end_to_end_rate=end_to_end_rate,
        latencies=slow["latencies"],
        paced_rate=per_s,
        messages=messages,
        body_bytes=body_size,
        in_flight=in_flight,
    )


# --- the product ---------------------------------------------------------------------------


@dataclass
class Desk:
    admin: Console
    agents: list[Console]
    channel_id: str
    sockets: list[ClientConnection] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for console in [self.admin, *self.agents]:
            await console.close()


async def setup_desk(product: Product, fake: FakeTelegram, agents: int, tracker: Tracker) -> Desk:
    admin = await Console.login(product, "admin", ADMIN_PASSWORD)
    ids = []
    for k in range(agents):
        response = await admin.http.post(
            "/api/admin/agents",
            json={
                "username": f"bench{k:03d}",
                "password": AGENT_PASSWORD,
                "display_name": f"Bench agent {k}",
                "role": "agent",
            },
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    response = await admin.http.post(
        "/api/admin/queues",
        json={
            "name": "Bench",
            "agent_ids": ids,
            "accept_timeout_s": 86_400,
            "reply_timeout_s": 7 * 86_400,
            "capacity": MAX_CAPACITY,
        },
    )
    response.raise_for_status()
    queue = response.json()
    response = await admin.http.post(
        "/api/admin/channels",
        json={
            "kind": "telegram",
            "name": "Bench bot",
            "queue_id": queue["id"],
            "token": BOT_TOKEN,
            "secret": SECRET,
            "api_base": fake.url,
        },
    )
    response.raise_for_status()
    desk = Desk(admin, [], response.json()["id"])
    for k in range(agents):
        desk.agents.append(await Console.login(product, f"bench{k:03d}", AGENT_PASSWORD))
    for console in desk.agents:
        ws = await connect(console.ws_url(), max_size=None, open_timeout=20)
        desk.sockets.append(ws)
        desk.readers.append(asyncio.create_task(read_socket(ws, tracker)))
    for console in desk.agents:
        response = await console.http.put("/api/me/status", json={"status": "active"})
        response.raise_for_status()
        assert response.json()["status"] == "active", response.text
    return desk


@dataclass
class Profiler:
    """py-spy `record --format raw` (collapsed stacks) of every service, for one phase."""

    directory: Path
    gil_only: bool = True
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, services: dict[str, int], phase: str) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in services.items():
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(self.directory / f"{phase}-{name}.txt"),
                    # Only samples holding the GIL: Python CPU, not the time a process waits
                    # runnable on a busy machine (which lands on syscalls such as socket writes).
                    *(["--gil"] if self.gil_only else []),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
        self.processes.clear()


@dataclass
class Results:
    args: argparse.Namespace
    baseline: Baseline
    floor: Floor
    throughput: Outcome
    latency: Outcome
    latency_slip: float
    agents: int
    log_warnings: int
    log_errors: int
    versions: dict[str, str]
    background: float  # share of all cores busy before the benchmark started


async def drive(
    args: argparse.Namespace,
    product: Product,
    database_url: str,
    amqp_url: str,
    fake: FakeTelegram,
) -> tuple[Outcome, Outcome, float, int]:
    rng = random.Random(args.seed)
    update_ids = iter(range(1, 10**9))
    customers = Customers(args.seed)
    tp_plan = throughput_plan(args.messages, args.users, rng, update_ids, customers)
    lt_plan = latency_plan(
        max(1, int(args.rate * args.duration)),
        tp_plan.new_users,
        args.new_share,
        rng,
        update_ids,
        customers,
    )
    chats = tp_plan.new_users + lt_plan.new_users
    agents = max(args.agents, math.ceil(chats * 1.1 / MAX_CAPACITY))
    tracker = Tracker()
    lag = LagMonitor()
    services = service_pids(product)
    sampler = Sampler(services, database_url, amqp_url)
    profiler = Profiler(Path(args.profile), args.profile_mode == "gil") if args.profile else None
    clock_offset = time.time() - time.monotonic()
    log(f"services: {services}; {agents} agents, capacity {MAX_CAPACITY}, {chats} chats planned")
    desk = await setup_desk(product, fake, agents, tracker)
    path = f"/webhooks/telegram/{desk.channel_id}"
    background = [asyncio.create_task(lag.run())]
    stats = await asyncpg.connect(database_url)
    outcomes = []
    slip = 0.0
    try:
        async with aiohttp.ClientSession(
            product.ingest,
            connector=aiohttp.TCPConnector(limit=args.concurrency),
            timeout=aiohttp.ClientTimeout(total=60),
        ) as client:
            quiet_since = time.monotonic()  # the desk set-up and agents' logins
            for plan in (tp_plan, lt_plan):
                # PostgreSQL's statistics of what came before (set-up, the previous run's
                # checks) must be in before the run starts: idle backends report within 10 s.
                await asyncio.sleep(max(2.0, quiet_since + PG_STATS_DELAY - time.monotonic()))
                chats_before = set(tracker.offered)
                if profiler:
                    await profiler.start(services, plan.name)
                background.append(asyncio.create_task(sampler.run()))
                while not sampler.samples:
                    await asyncio.sleep(0.01)
                lag.take()
                pg_before = await pg_counters(stats)
                log(f"{plan.name}: posting {len(plan.posts)} updates ({plan.new_users} new users)")
                if plan is tp_plan:
                    await post_flat_out(client, path, plan.posts, args.concurrency)
                else:
                    slip = await post_paced(client, path, plan.posts, args.rate, args.concurrency)
                posted = time.monotonic() - min(p.start for p in plan.posts)
                bad = Counter(p.status for p in plan.posts if p.status != 200)
                log(f"{plan.name}: posted in {posted:.1f} s; non-200: {dict(bad) or 'none'}")
                settled = await settle(
                    tracker, plan, chats_before, sampler, args.quiet, args.drain_timeout
                )
                settled_at = time.monotonic()
                background.pop().cancel()
                if profiler:
                    await profiler.stop()
                await asyncio.sleep(max(0.0, settled_at + PG_STATS_DELAY - time.monotonic()))
                pg_after = await pg_counters(stats)
                # Checks through the console API and the database: not part of the run.
                outcome = await reconcile(
                    desk.admin, tracker, plan, chats_before, settled, lag.take()
                )
                outcome.samples = sampler.take()
                outcome.pg = {k: v - pg_before.get(k, 0.0) for k, v in pg_after.items()}
                try:
                    outcome.stages = await stage_breakdown(
                        database_url, tracker, outcome, clock_offset
                    )
                except asyncpg.PostgresError as exc:  # the product's tables changed
                    log(f"no stage breakdown: {exc!r}")
                quiet_since = time.monotonic()
                log(
                    f"{plan.name}: {settled}; visible {len(outcome.visible)}/{len(outcome.ok)}, "
                    f"new chats {outcome.new_chats}, unpushed extra {outcome.unpushed_extra}, "
                    f"e2e {e2e_rate(outcome):.0f} msg/s"
                )
                outcomes.append(outcome)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await stats.close()
        await desk.close()
        if profiler:
            await profiler.stop()
    return outcomes[0], outcomes[1], slip, agents


async def background_load(seconds: float = 3) -> float:
    """Share of all cores busy while the benchmark does nothing (other people's work)."""
    busy0, total0 = busy_ticks()
    await asyncio.sleep(seconds)
    busy1, total1 = busy_ticks()
    return (busy1 - busy0) / max(1, total1 - total0)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def git_commit() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "services", "libs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (commit or "?") + (" + uncommitted changes in services/libs" if dirty else "")


async def versions(servers: backends.Servers) -> dict[str, str]:
    found = {"python": platform.python_version()}
    conn = await asyncpg.connect(servers.postgres)
    try:
        found["postgresql"] = str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()
    connection = await aio_pika.connect(servers.rabbitmq)
    try:
        props = connection.transport.connection.server_properties  # type: ignore[union-attr]
        found["rabbitmq"] = str(props.get("version", "?"))
    except Exception:
        found["rabbitmq"] = "?"
    finally:
        await connection.close()
    return found


async def run(args: argparse.Namespace) -> Results:
    data_dir = Path(tempfile.mkdtemp(prefix="chatdesk-bench-"))
    fake = FakeTelegram()
    server, server_task = await serve(fake)
    ok = False
    try:
        with backends.servers() as servers:
            try:
                found = await versions(servers)
                background = await background_load()
                log(f"machine busy before the run: {background:.0%} of all cores")
                baseline_vhost = servers.fresh_vhost()
                log(f"baseline: {args.baseline_messages} messages, {args.in_flight} in flight")
                baseline = await run_baseline(
                    baseline_vhost,
                    args.baseline_messages,
                    args.in_flight,
                    args.rate,
                    args.baseline_seconds,
                )
                log(
                    f"baseline: publish {baseline.publish_rate:,.0f}/s, "
                    f"publish+consume {baseline.end_to_end_rate:,.0f}/s"
                )
                floor_database, floor_vhost = await servers.fresh()
                floor = await run_floor(floor_database, floor_vhost, args)
                log(floor_summary(floor))
                database_url, amqp_url = await servers.fresh()
                log(f"starting chatdesk (distributed) in {data_dir}")
                async with running(
                    "distributed",
                    data_dir,
                    database_url=database_url,
                    amqp_url=amqp_url,
                    extra_env={
                        # The product's default, not the tests'.
                        "CHATDESK_DB_POOL_SIZE": str(POOL_SIZE),
                        "CHATDESK_LOG_LEVEL": args.log_level,
                        **dict(item.split("=", 1) for item in args.env),
                    },
                ) as product:
                    tp, lt, slip, agents = await drive(args, product, database_url, amqp_url, fake)
                    product_log = product.log()
                ok = True
            finally:
                created = sorted({*servers.databases, *servers.vhosts})
                await servers.drop_all()
                log(f"dropped databases and vhosts {created}")
    finally:
        server.should_exit = True
        await server_task
        if ok and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            log(f"product logs kept in {data_dir}")
    return Results(
        args=args,
        baseline=baseline,
        floor=floor,
        throughput=tp,
        latency=lt,
        latency_slip=slip,
        agents=agents,
        log_warnings=sum(1 for line in product_log.splitlines() if " WARNING " in line),
        log_errors=sum(1 for line in product_log.splitlines() if " ERROR " in line),
        versions=found,
        background=background,
    )


# --- report --------------------------------------------------------------------------------


def e2e_rate(outcome: Outcome) -> float:
    return len(outcome.visible) / (outcome.last_visible - outcome.first_start)


def report(results: Results) -> str:
    a, tp, lt, bl = results.args, results.throughput, results.latency, results.baseline
    fl_tp, fl_lt = results.floor.throughput, results.floor.latency
    tp_machine, lt_machine = (
        o.cpu().get(MACHINE, math.nan) / max(1, len(o.ok)) * 1000 for o in (tp, lt)
    )
    tp_rate, tp_webhook = e2e_rate(tp), len(tp.ok) / (tp.last_end - tp.first_start)
    lt_all, bl_lat = lt.latencies(), bl.latencies
    lt_span = max(p.start for p in lt.plan.posts) - min(p.start for p in lt.plan.posts)
    lt_rate = (len(lt.plan.posts) - 1) / lt_span if lt_span > 0 else math.nan
    p99 = pct(lt_all, 99)
    v = results.versions
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    complete = tp.not_visible == 0 and lt.not_visible == 0 and not tp.failed and not lt.failed

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = [
        "## End to end: Telegram webhook → agent WebSocket (`make bench`, `bench/e2e.py`)",
        "",
        f"Run {when} on commit {v['commit']}. Machine: {os.cpu_count()} cores "
        f"({cpu_model()}), PostgreSQL {v['postgresql']}, "
        f"RabbitMQ {v['rabbitmq']}, Python {v['python']}. chatdesk in distributed mode (one "
        f"process per service, `CHATDESK_LOG_LEVEL={a.log_level}`) on a fresh database and "
        "vhost; the load generator and the agents' WebSockets run in one more Python process on "
        f"the same {os.cpu_count()} cores, so every figure includes their CPU too. Other work on "
        f"the machine just before the run: {results.background:.0%} of all cores"
        + (
            " — **the machine was not quiet: figures are pessimistic**."
            if results.background > 0.1
            else "."
        ),
        "",
        "| figure | chatdesk | floor: same hops, no logic | chatdesk / floor "
        "| RabbitMQ baseline | chatdesk / baseline |",
        "|---|---:|---:|---:|---:|---:|",
        f"| end-to-end throughput, msg/s | **{rate(tp_rate)}** | {rate(fl_tp.rate)} | "
        f"{tp_rate / fl_tp.rate:.0%} | {rate(bl.end_to_end_rate)} (publish + consume) | "
        f"{tp_rate / bl.end_to_end_rate:.1%} |",
        f"| accepted by the webhook, msg/s | {rate(tp_webhook)} | {rate(fl_tp.accepted_rate)} | "
        f"{tp_webhook / fl_tp.accepted_rate:.0%} | {rate(bl.publish_rate)} (publish only) | "
        f"{tp_webhook / bl.publish_rate:.1%} |",
        *(
            f"| latency at {a.rate:g} msg/s, {name} | {bold}{ms(ours)}{bold} | {ms(floor)} | "
            f"{ours / floor:.0f}x | {ms(base)} | |"
            for name, ours, floor, base, bold in (
                ("p50", pct(lt_all, 50), pct(fl_lt.latencies, 50), pct(bl_lat, 50), ""),
                ("p95", pct(lt_all, 95), pct(fl_lt.latencies, 95), pct(bl_lat, 95), ""),
                ("p99", p99, pct(fl_lt.latencies, 99), pct(bl_lat, 99), "**"),
                (
                    "max",
                    max(lt_all, default=math.nan),
                    max(fl_lt.latencies, default=math.nan),
                    max(bl_lat, default=math.nan),
                    "",
                ),
            )
        ),
        f"| CPU of the whole machine per message, flat out | {tp_machine:.2f} ms | "
        f"{fl_tp.cpu_ms_per_message:.2f} ms | {tp_machine / fl_tp.cpu_ms_per_message:.1f}x | | |",
        f"| the same at {a.rate:g} msg/s | {lt_machine:.2f} ms | "
        f"{fl_lt.cpu_ms_per_message:.2f} ms | {lt_machine / fl_lt.cpu_ms_per_message:.1f}x | | |",
        "",
        f"Targets: ≥ {TARGET_RATE:.0f} msg/s sustained — {verdict(tp_rate >= TARGET_RATE)}; "
        f"p99 < {TARGET_P99:g} s at {a.rate:g} msg/s — {verdict(p99 < TARGET_P99)}."
        + ("" if complete else " **Incomplete run: some messages failed or never showed.**"),
        "",
        "What the figures are:",
        "",
        f"- **End-to-end throughput**: N / (time from the first webhook POST to the moment the "
        f"last message is visible to an agent), N = {len(tp.ok)} updates from "
        f"{tp.plan.new_users} customers in random order (realistic names of several locales, "
        f"`bench/people.py`), {a.concurrency} POSTs in flight "
        "(aiohttp, keep-alive). A message is *visible* when a `chat.message_received` event "
        "carrying its (unique) text arrives on any agent's WebSocket; the first message of a new "
        "chat is published before routing offers the chat, so for it the `chat.offered` event "
        "of its chat counts when that comes first (the console loads the chat then).",
        "- **Accepted by the webhook**: 200 answers per second over the posting window (ingest "
        "commits the update to its outbox before answering).",
        f"- **Latency**: from the moment an update is due to the WebSocket event, paced at "
        f"{a.rate:g} msg/s for {a.duration:g} s ({len(lt.plan.posts)} messages; "
        f"{lt.plan.new_users} from new customers, the rest from customers with open chats), at "
        f"most {a.concurrency} POSTs in flight like Telegram's `max_connections`: an update "
        "waiting for a free connection is late, and that counts (no coordinated omission).",
        f"- **Baseline**: aio-pika on the same broker, own vhost, durable quorum queue behind a "
        f"topic exchange (as the product declares them), {bl.body_bytes} B persistent messages. "
        f"*Publish only*: {bl.messages} publishes with confirms, {bl.in_flight} in flight "
        f"(`asyncio.gather` batches). *Publish + consume*: the same while another process "
        f"consumes (prefetch 50, manual ack); time to the last message consumed. Its latency: "
        f"publish start → consumer receipt, paced at {bl.paced_rate:g} msg/s.",
        "- **Floor** (`bench/floor.py`): the same two runs (same updates, same pacing, same "
        "posting client) through a bare pipeline with chatdesk's hops and guarantees and none of "
        "its logic: four processes (ingest, contacts, chat, gateway) on asyncpg, aio-pika and "
        "aiohttp; at each hop one transaction per batch (dedup key or inbox, a row per message, "
        "the outbox), an ack frame per batch, the outbox published with confirms and deleted, "
        "durable quorum queues; the last hop writes the agent's event log and pushes a frame to "
        "a WebSocket. *CPU of the whole machine*: busy time of all cores per message, from the "
        "first POST to the last message shown. What chatdesk costs above the floor is its own: "
        "SQLAlchemy, pydantic, the web stack, the services' work, new chats' extra events.",
        "",
        "Details:",
        "",
        "| | throughput run | latency run |",
        "|---|---:|---:|",
        f"| updates posted / answered 200 | {len(tp.plan.posts)} / {len(tp.ok)} | "
        f"{len(lt.plan.posts)} / {len(lt.ok)} |",
        f"| visible to an agent / never visible | {len(tp.visible)} / {tp.not_visible} | "
        f"{len(lt.visible)} / {lt.not_visible} |",
        f"| new chats offered | {tp.new_chats} | {lt.new_chats} |",
        f"| shown via `chat.message_received` / via `chat.offered` | "
        f"{len(tp.latencies('pushed'))} / {len(tp.latencies('offered'))} | "
        f"{len(lt.latencies('pushed'))} / {len(lt.latencies('offered'))} |",
        f"| messages no push carried, other than a chat's first (see below) | "
        f"{tp.unpushed_extra} | {lt.unpushed_extra} |",
        f"| customers whose messages landed in more than one chat | {tp.split_users} | "
        f"{lt.split_users} |",
        f"| latency p50 / p99 of `chat.message_received` | "
        f"{ms(pct(tp.latencies('pushed'), 50))} / {ms(pct(tp.latencies('pushed'), 99))} | "
        f"{ms(pct(lt.latencies('pushed'), 50))} / {ms(pct(lt.latencies('pushed'), 99))} |",
        f"| latency p50 / p99 of `chat.offered` (new chats) | "
        f"{ms(pct(tp.latencies('offered'), 50))} / {ms(pct(tp.latencies('offered'), 99))} | "
        f"{ms(pct(lt.latencies('offered'), 50))} / {ms(pct(lt.latencies('offered'), 99))} |",
        f"| webhook answer time p50 / p99 | {ms(pct(tp.webhook_times(), 50))} / "
        f"{ms(pct(tp.webhook_times(), 99))} | {ms(pct(lt.webhook_times(), 50))} / "
        f"{ms(pct(lt.webhook_times(), 99))} |",
        f"| posting window / last message visible after | "
        f"{tp.last_end - tp.first_start:.1f} s / {tp.last_visible - tp.first_start:.1f} s | "
        f"{lt.last_end - lt.first_start:.1f} s / {lt.last_visible - lt.first_start:.1f} s |",
        f"| achieved posting rate (worst schedule slip) | flat out | {rate(lt_rate)} msg/s "
        f"({ms(results.latency_slip)}) |",
        f"| bench event-loop lag p99 / max | {ms(pct(tp.bench_lag, 99))} / "
        f"{ms(max(tp.bench_lag, default=math.nan))} | {ms(pct(lt.bench_lag, 99))} / "
        f"{ms(max(lt.bench_lag, default=math.nan))} |",
        f"| how the wait ended | {tp.settled} | {lt.settled} |",
        "",
        f"{results.agents} agents in one queue (capacity {MAX_CAPACITY} chats each), all active "
        f"with a WebSocket open; nobody accepts or replies. Product log: "
        f"{results.log_warnings} warnings, {results.log_errors} errors. An unpushed message "
        "(not a chat's first) had a `chat.message_received` that gateway gave to no agent (chat "
        "threaded it before it heard of the offer): the console saw it only if it loaded the "
        "chat after the message was stored; it is timed at the offer (a lower bound).",
        "",
        "Where the time goes, per message (p50 / p99), split at the product's own timestamps: "
        "ingest's receipt (the message's `created_at`; routing's `queued_at` for a new chat), "
        "the time of the event the agent gets (`chat.message_received` emitted by chat, or "
        "`chat.offered` emitted by routing) and gateway's inbox record of it (handler start):",
        "",
        "| stage | throughput: pushed | throughput: new chat | latency: pushed "
        "| latency: new chat |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage in STAGE_NAMES:
        cells = []
        for outcome in (tp, lt):
            for how in ("pushed", "offered"):
                values = outcome.stages.get(how, {}).get(stage, [])
                cells.append(f"{ms(pct(values, 50))} / {ms(pct(values, 99))}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Backlog during the throughput run (sampled every 0.5 s; max and mean): messages ready "
        "in each consumer group's queue, rows waiting in each service's outbox:",
        "",
        "| where | max | mean |",
        "|---|---:|---:|",
    ]
    for kind in ("queues", "outboxes"):
        series: dict[str, list[int]] = defaultdict(list)
        for sample in tp.samples:
            if sample.t <= tp.last_visible:
                for name, value in getattr(sample, kind).items():
                    series[name].append(value)
        for name, counts in sorted(series.items(), key=lambda kv: -max(kv[1])):
            if max(counts) > 0:
                where = f"queue `{name}`" if kind == "queues" else f"outbox of {name}"
                lines.append(f"| {where} | {max(counts)} | {sum(counts) / len(counts):.0f} |")
    lines += [
        "",
        "PostgreSQL work per message (cumulative statistics of the product's database over each "
        "run; they include the relays' idle polling and this benchmark's outbox sampling):",
        "",
        "| per message | throughput run | latency run |",
        "|---|---:|---:|",
    ]
    for key in ("transactions", "connections", "rows_written", "rows_returned"):
        label = {"connections": "connections opened"}.get(key, key.replace("_", " "))
        lines.append(
            f"| {label} | {tp.pg.get(key, math.nan) / len(tp.ok):.2f} | "
            f"{lt.pg.get(key, math.nan) / max(1, len(lt.ok)):.2f} |"
        )
    busiest = sorted(
        (
            (v, k.rsplit(":", 1)[0])
            for k, v in tp.pg.items()
            if k.endswith(":rows_read") and ".outbox:" not in k  # the sampler counts outboxes
        ),
        reverse=True,
    )
    for rows, table in busiest[:4]:
        scans = (tp.pg[f"{table}:seq_scan"] + tp.pg[f"{table}:idx_scan"]) / len(tp.ok)
        lines.append(
            f"| rows read from `{table}` ({scans:.1f} scans) | {rows / len(tp.ok):,.0f} | "
            f"{lt.pg.get(f'{table}:rows_read', 0.0) / max(1, len(lt.ok)):,.0f} |"
        )
    lines += [
        "",
        "CPU per message, by process: ms of CPU per update, from the first POST to the last "
        "message shown (machine busy = all cores together):",
        "",
        "| process | throughput run | latency run |",
        "|---|---:|---:|",
    ]
    tp_cpu, lt_cpu = tp.cpu(), lt.cpu()
    for cpu in (tp_cpu, lt_cpu):
        if cpu:
            cpu["everything else on the machine"] = 2 * cpu[MACHINE] - sum(cpu.values())
    for key in tp_cpu:
        lines.append(
            f"| {key} | {tp_cpu[key] / len(tp.ok) * 1000:.2f} | "
            f"{lt_cpu.get(key, 0.0) / max(1, len(lt.ok)) * 1000:.2f} |"
        )
    for name, outcome in (("throughput", tp), ("latency", lt)):
        if len(outcome.samples) > 1:
            span = outcome.last_visible - outcome.samples[0].t
            busy = outcome.cpu()[MACHINE] / span / (os.cpu_count() or 1)
            lines.append("")
            lines.append(
                f"Machine busy during the {name} run: {busy:.0%} of {os.cpu_count()} cores."
            )
    lines.append("")
    lines.append(
        f"Command: `python -m bench.e2e --messages {a.messages} --users {a.users} "
        f"--concurrency {a.concurrency} --rate {a.rate:g} --duration {a.duration:g} "
        f"--new-share {a.new_share:g} --agents {a.agents}"
        + "".join(f" --env {item}" for item in a.env)
        + "`."
    )
    return "\n".join(lines)


HEADER = """# Benchmarks

Measured figures of chatdesk on real PostgreSQL and RabbitMQ, written by the benchmark programs
in `bench/` (not tests: run them on a quiet machine). Each benchmark owns one section, between its
`<!-- name:start -->` and `<!-- name:end -->` markers, and rewrites it on every run; the machine's
raw figures (what the hardware and libraries can do) are in the team notes on performance.
"""


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else HEADER
    block = f"{MARK_START}\n{section}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-n", "--messages", type=int, default=3000, help="throughput run: updates")
    parser.add_argument("-m", "--users", type=int, default=500, help="throughput run: customers")
    parser.add_argument("-c", "--concurrency", type=int, default=48, help="POSTs in flight")
    parser.add_argument("--rate", type=float, default=100, help="latency run: msg/s")
    parser.add_argument("--duration", type=float, default=20, help="latency run: seconds")
    parser.add_argument(
        "--new-share", type=float, default=0.2, help="latency run: share from new customers"
    )
    parser.add_argument("--agents", type=int, default=10, help="at least this many agents")
    parser.add_argument("--baseline-messages", type=int, default=20_000)
    parser.add_argument("--baseline-seconds", type=float, default=10, help="paced baseline")
    parser.add_argument("--in-flight", type=int, default=100, help="baseline publishes in flight")
    parser.add_argument("--quiet", type=float, default=5, help="stop waiting after s of silence")
    parser.add_argument("--drain-timeout", type=float, default=300, help="per run, seconds")
    parser.add_argument("--timeout", type=float, default=1200, help="whole benchmark, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="WARNING", help="CHATDESK_LOG_LEVEL")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the product, e.g. CHATDESK_DB_POOL_SIZE=20 (repeatable)",
    )
    parser.add_argument("--output", type=Path, default=DOC, help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the product's log directory")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy every service per run into DIR (collapsed stacks); implies --no-write",
    )
    parser.add_argument(
        "--profile-mode",
        choices=("gil", "wall"),
        default="gil",
        help="gil: samples holding the GIL (Python CPU); wall: every non-idle sample",
    )
    args = parser.parse_args(argv)
    bounded = {
        "--messages": (args.messages, 1, 1_000_000),
        "--users": (args.users, 1, 1_000_000),
        "--concurrency": (args.concurrency, 1, 1000),
        "--rate": (args.rate, 0.1, 10_000),
        "--duration": (args.duration, 0.1, 3600),
        "--new-share": (args.new_share, 0, 1),
        "--agents": (args.agents, 1, 1000),
        "--baseline-messages": (args.baseline_messages, 1, 10_000_000),
        "--in-flight": (args.in_flight, 1, 10_000),
        "--timeout": (args.timeout, 1, 24 * 3600),
    }
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    for flag, (value, low, high) in bounded.items():
        if not low <= value <= high:
            parser.error(f"{flag} must be within [{low}, {high}]")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    commit = git_commit()
    with contextlib.suppress(ImportError):
        import uvloop  # a lighter load generator leaves more CPU to the product

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def bounded() -> Results:
        async with asyncio.timeout(args.timeout):
            return await run(args)

    try:
        results = asyncio.run(bounded())
    except TimeoutError:
        log(f"gave up after the global timeout of {args.timeout:g} s (cleaned up)")
        sys.exit(2)
    results.versions["commit"] = commit
    section = report(results)
    print(section)
    if args.no_write or args.profile:
        log("not writing docs (--no-write or --profile)")
    else:
        write_section(args.output, section)
        log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
