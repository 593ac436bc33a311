"""The floor: chatdesk's message path with its guarantees and nothing else, a baseline for
`bench.e2e` measured in the same run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ .venv/bin/python -m bench.floor

One process per hop a customer's message takes through chatdesk, each doing for every message
what chatdesk's framework does and no more:

- `ingest`: a webhook POST; the update's dedup key and an outbox row in one transaction (group
  commit); 200 once committed; a relay publishes the outbox rows with confirms, then deletes them.
- `contacts`, `chat`: consume (prefetch 64, manual ack); per batch one transaction that records
  the events in the inbox, writes a row per new event and the outbox; one ack frame per batch;
  the relay as above.
- `gateway`: consume; per batch one transaction (inbox, a row per event: the agent's event log);
  ack; a frame per event to the agent's WebSocket.

The same broker setup as chatdesk's (durable topic exchange, durable quorum queue per consumer
group, persistent messages, publisher confirms), the same database server (asyncpg, a fresh
database), uvloop, aiohttp for the HTTP and WebSocket ends, and the load of `bench.load`.
Left out, and so what chatdesk costs above this floor: SQLAlchemy, pydantic, Starlette, the
services' own work (contact lookup, threading, routing, duplicate search) and the extra events
of new chats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aio_pika
import aiohttp
import asyncpg
import orjson
import uvloop
from aiohttp import web
from websockets.asyncio.client import connect

from bench.load import (
    CLK_TCK,
    Customers,
    Plan,
    Tracker,
    busy_ticks,
    cpu_seconds,
    latency_plan,
    log,
    ms,
    pct,
    post_flat_out,
    post_paced,
    read_socket,
    throughput_plan,
)
from tests.support import backends
from tests.support.serving import free_port

HOPS = ("ingest", "contacts", "chat", "gateway")
EXCHANGE = "floor"
PREFETCH = 64  # chatdesk's bus_prefetch
MAX_BATCH = 100  # chatdesk's GroupCommit
T = TypeVar("T")
SCHEMA = """
CREATE TABLE dedup (key bigint PRIMARY KEY, received_at timestamptz NOT NULL);
CREATE TABLE inbox (
    event_id uuid NOT NULL, consumer text NOT NULL, PRIMARY KEY (event_id, consumer)
);
CREATE TABLE outbox (id bigserial PRIMARY KEY, routing_key text NOT NULL, body bytea NOT NULL);
CREATE TABLE work (
    id bigserial PRIMARY KEY, hop text NOT NULL, event_id uuid NOT NULL, body bytea NOT NULL
);
"""


# --- one hop, in its own process -------------------------------------------------------------


class GroupCommit(Generic[T]):
    """Whatever queued up while the previous batch ran is the next batch (as chatdesk's)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[None]]) -> None:
        self.run = run
        self.queue: asyncio.Queue[T] = asyncio.Queue()
        self.task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self.run(batch)


class Relay:
    """The outbox rows a commit wrote, published with confirms and then deleted."""

    def __init__(self, pool: asyncpg.Pool, exchange: aio_pika.abc.AbstractExchange, key: str):
        self.pool, self.exchange, self.key = pool, exchange, key
        self.rows: list[tuple[int, bytes]] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._work())

    def hand(self, rows: list[tuple[int, bytes]]) -> None:
        self.rows.extend(rows)
        self.wake.set()

    async def _work(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            rows, self.rows = self.rows, []
            await asyncio.gather(
                *(
                    self.exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=self.key,
                    )
                    for _, body in rows
                )
            )
            await self.pool.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [i for i, _ in rows]
            )


async def declare_queues(amqp_url: str) -> None:
    """Each consumer hop's queue, bound, before any hop starts: nothing is published unrouted."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for name in HOPS[1:]:
            queue = await channel.declare_queue(
                f"floor.{name}", durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange, routing_key=f"floor.{name}")
    finally:
        await connection.close()


def envelope(hop: str, text: str, user: int) -> bytes:
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": f"floor.{hop}",
            "source": hop,
            "time": datetime.now(UTC),
            "subject": str(user),
            "data": {"text": text, "user": user},
            "schema_version": 1,
        }
    )


async def write_outbox(
    conn: asyncpg.Connection, key: str, bodies: list[bytes]
) -> list[tuple[int, bytes]]:
    ids = await conn.fetch(
        "INSERT INTO outbox (routing_key, body) SELECT $1, unnest($2::bytea[]) RETURNING id",
        key,
        bodies,
    )
    return [(row[0], body) for row, body in zip(ids, bodies, strict=True)]


async def hop_main(name: str, database_url: str, amqp_url: str, port: int) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    amqp = await aio_pika.connect_robust(amqp_url)
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    position = HOPS.index(name)
    key = f"floor.{HOPS[position + 1]}" if position + 1 < len(HOPS) else ""
    relay = Relay(pool, exchange, key) if key else None
    app = web.Application()
    sockets: set[web.WebSocketResponse] = set()  # the agent's, at the gateway

    if name == "ingest":

        async def commit_updates(batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                new = {
                    row[0]
                    for row in await conn.fetch(
                        "INSERT INTO dedup (key, received_at) SELECT unnest($1::bigint[]), now() "
                        "ON CONFLICT DO NOTHING RETURNING key",
                        [update["update_id"] for update, _ in batch],
                    )
                }
                bodies = []
                for update, _ in batch:
                    if update["update_id"] in new:
                        new.discard(update["update_id"])  # twice in one batch: once
                        message = update["message"]
                        bodies.append(envelope(name, message["text"], message["from"]["id"]))
                rows = await write_outbox(conn, key, bodies)
            for _, answered in batch:
                answered.set_result(None)
            assert relay
            relay.hand(rows)

        updates = GroupCommit(commit_updates)

        async def webhook(request: web.Request) -> web.Response:
            answered = asyncio.get_running_loop().create_future()
            updates.queue.put_nowait((orjson.loads(await request.read()), answered))
            await answered
            return web.Response(text="{}", content_type="application/json")

        app.router.add_post("/webhook", webhook)
    else:

        async def handle(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
            events = [orjson.loads(message.body) for message in batch]
            async with pool.acquire() as conn, conn.transaction():
                fresh = {
                    str(row[0])
                    for row in await conn.fetch(
                        "INSERT INTO inbox (event_id, consumer) SELECT unnest($1::uuid[]), $2 "
                        "ON CONFLICT DO NOTHING RETURNING event_id",
                        [event["id"] for event in events],
                        name,
                    )
                }
                new = []
                for event in events:
                    if event["id"] in fresh:
                        fresh.discard(event["id"])  # twice in one batch: once
                        new.append(event)
                await conn.execute(
                    "INSERT INTO work (hop, event_id, body) "
                    "SELECT $1, unnest($2::uuid[]), unnest($3::bytea[])",
                    name,
                    [event["id"] for event in new],
                    [orjson.dumps(event["data"]) for event in new],
                )
                bodies = [envelope(name, e["data"]["text"], e["data"]["user"]) for e in new]
                rows = await write_outbox(conn, key, bodies) if relay else []
            await batch[-1].ack(multiple=True)
            if relay:
                relay.hand(rows)
            for event in new:
                frame = {"type": "chat.message_received", "data": {"message": event["data"]}}
                for ws in list(sockets):
                    await ws.send_bytes(orjson.dumps(frame))

        consumed = GroupCommit(handle)
        inbound = await amqp.channel()
        await inbound.set_qos(prefetch_count=PREFETCH)
        queue = await inbound.get_queue(f"floor.{name}")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            consumed.queue.put_nowait(message)

        await queue.consume(on_message)

    if name == "gateway":

        async def stream(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            sockets.add(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                sockets.discard(ws)
            return ws

        app.router.add_get("/ws", stream)

    if app.router.routes():  # ingest's webhook, gateway's WebSocket
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until the parent terminates this process


def _hop_process(name: str, database_url: str, amqp_url: str, port: int) -> None:
    uvloop.run(hop_main(name, database_url, amqp_url, port))


# --- driving it ----------------------------------------------------------------------------


@dataclass
class RunFigures:
    messages: int
    seen: int
    rate: float  # messages / (first POST -> last frame)
    accepted_rate: float  # 200 answers / posting window
    latencies: list[float]  # origin -> frame, seconds
    cpu_ms_per_message: float  # the whole machine's
    processes_ms_per_message: float  # the floor's own processes (RabbitMQ, PostgreSQL apart)


@dataclass
class Floor:
    throughput: RunFigures
    latency: RunFigures


async def _drive(
    plan: Plan,
    post: Callable[[], Awaitable[Any]],
    tracker: Tracker,
    pids: list[int],
    quiet: float,
    timeout: float,
) -> RunFigures:
    busy0, cpu0 = busy_ticks()[0], sum(cpu_seconds(p) for p in pids)
    await post()
    deadline = time.monotonic() + timeout
    while (
        sum(p.text in tracker.seen for p in plan.posts) < len(plan.posts)
        and time.monotonic() - tracker.last_event < quiet
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.1)
    busy1, cpu1 = busy_ticks()[0], sum(cpu_seconds(p) for p in pids)
    seen = [tracker.seen[p.text] for p in plan.posts if p.text in tracker.seen]
    first = min(p.start for p in plan.posts)
    answered = [p.end for p in plan.posts if p.status == 200]
    n = len(plan.posts)
    return RunFigures(
        messages=n,
        seen=len(seen),
        rate=n / (max(seen) - first) if len(seen) == n else float("nan"),
        accepted_rate=len(answered) / (max(answered) - first) if answered else float("nan"),
        latencies=[tracker.seen[p.text] - p.origin for p in plan.posts if p.text in tracker.seen],
        cpu_ms_per_message=(busy1 - busy0) / CLK_TCK / n * 1000,
        processes_ms_per_message=(cpu1 - cpu0) / n * 1000,
    )


async def run_floor(database_url: str, amqp_url: str, load: argparse.Namespace) -> Floor:
    """The floor on a fresh database and vhost (`database_url`, `amqp_url`), driven by the
    same plans as chatdesk: flat out, then paced. `load` holds `bench.e2e`'s options of the same
    names: messages, users, concurrency, rate, duration, new_share, seed, quiet, drain_timeout."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()
    await declare_queues(amqp_url)
    ports = {name: free_port() for name in HOPS}
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_hop_process, args=(name, database_url, amqp_url, ports[name]), daemon=True
        )
        for name in HOPS
    ]
    for process in processes:
        process.start()
    tracker = Tracker()
    rng = random.Random(load.seed)
    customers = Customers(load.seed)
    ids = iter(range(1, 10**9))
    try:
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    f"http://127.0.0.1:{ports['ingest']}",
                    connector=aiohttp.TCPConnector(limit=load.concurrency),
                )
            )
            ws = None
            for _ in range(300):
                with contextlib.suppress(OSError):
                    ws = await stack.enter_async_context(
                        connect(f"ws://127.0.0.1:{ports['gateway']}/ws")
                    )
                    break
                await asyncio.sleep(0.1)
            if ws is None:
                raise TimeoutError("the floor's gateway did not start")
            reader = asyncio.create_task(read_socket(ws, tracker))
            await _wait_ingest(session)
            pids = [p.pid for p in processes if p.pid]
            tp = throughput_plan(load.messages, load.users, rng, ids, customers)
            log(f"floor: throughput, {load.messages} updates")
            flat = await _drive(
                tp,
                lambda: post_flat_out(session, "/webhook", tp.posts, load.concurrency),
                tracker,
                pids,
                load.quiet,
                load.drain_timeout,
            )
            lt = latency_plan(
                int(load.rate * load.duration), load.users, load.new_share, rng, ids, customers
            )
            log(f"floor: latency, {len(lt.posts)} updates at {load.rate:g}/s")
            paced = await _drive(
                lt,
                lambda: post_paced(session, "/webhook", lt.posts, load.rate, load.concurrency),
                tracker,
                pids,
                load.quiet,
                load.drain_timeout,
            )
            reader.cancel()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(10)
    return Floor(flat, paced)


async def _wait_ingest(session: aiohttp.ClientSession) -> None:
    for _ in range(300):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get("/") as response:
                if response.status == 404:  # up: only /webhook is served
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError("the floor's ingest did not start")


def summary(floor: Floor) -> str:
    tp, lt = floor.throughput, floor.latency
    return (
        f"floor: {tp.rate:,.0f} msg/s end to end ({tp.seen}/{tp.messages} seen, "
        f"{tp.cpu_ms_per_message:.2f} ms CPU/msg, its processes {tp.processes_ms_per_message:.2f});"
        f" {lt.messages} paced: "
        f"p50 {ms(pct(lt.latencies, 50))}, p99 {ms(pct(lt.latencies, 99))} "
        f"({lt.seen}/{lt.messages} seen, {lt.cpu_ms_per_message:.2f} ms CPU/msg, its processes "
        f"{lt.processes_ms_per_message:.2f})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=3000)
    parser.add_argument("-m", "--users", type=int, default=500)
    parser.add_argument("-c", "--concurrency", type=int, default=48)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--new-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", type=float, default=5, help="stop waiting after s of silence")
    parser.add_argument("--drain-timeout", type=float, default=300, help="per run, seconds")
    args = parser.parse_args(argv)

    async def go() -> Floor:
        with backends.servers() as servers:
            try:
                database_url, amqp_url = await servers.fresh()
                return await run_floor(database_url, amqp_url, args)
            finally:
                await servers.drop_all()

    print(summary(uvloop.run(go())))


if __name__ == "__main__":
    main()
