"""The load both end-to-end benchmarks drive: customers, their Telegram updates, the POSTs
(flat out or paced), and what the agents' WebSockets show. `bench.e2e` aims it at chatdesk,
`bench.floor` at a bare pipeline with the same hops and guarantees."""

from __future__ import annotations

import asyncio
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection

from bench.people import People
from tests.support import desk

SECRET = "bench-Secret_1"
USER_BASE = 7_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def busy_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (all cores, from /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def cpu_seconds(pid: int | str) -> float:
    """A process's CPU time so far (user + system); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


def rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


# --- what agents see ------------------------------------------------------------------------


class Tracker:
    """Every agent's WebSocket frames, reduced to first-seen times (time.monotonic)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # message text -> chat.message_received
        self.chat_of: dict[str, str] = {}  # message text -> chat id
        self.offered: dict[str, float] = {}  # chat id -> chat.offered
        self.frames: Counter[str] = Counter()
        self.last_event = time.monotonic()

    def on_frame(self, received: float, raw: str | bytes) -> None:
        frame = orjson.loads(raw)
        kind = frame.get("type", "?")
        self.frames[kind] += 1
        data = frame.get("data") or {}
        if kind == "chat.message_received":
            text = (data.get("message") or {}).get("text")
            if text and text not in self.seen:
                self.seen[text] = received
                self.chat_of[text] = data.get("chat_id", "")
                self.last_event = received
        elif kind == "chat.offered":
            chat_id = data.get("chat_id")
            if chat_id and chat_id not in self.offered:
                self.offered[chat_id] = received
                self.last_event = received


async def read_socket(ws: ClientConnection, tracker: Tracker) -> None:
    async for raw in ws:
        tracker.on_frame(time.monotonic(), raw)


class LagMonitor:
    """How late this process's event loop runs (it also timestamps the WebSocket frames)."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - before - 0.01)

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags


# --- load ----------------------------------------------------------------------------------


@dataclass
class Post:
    text: str
    user: int
    body: bytes
    start: float = math.nan  # the POST started
    end: float = math.nan  # its answer arrived
    status: int = 0
    due: float = math.nan  # paced runs: when the update was due (the POST may wait for a slot)

    @property
    def origin(self) -> float:
        """Where latency is measured from: the due time when paced (no coordinated omission:
        a webhook that answers slowly delays the updates behind it, as it would Telegram's)."""
        return self.start if math.isnan(self.due) else self.due


class Customers:
    """Each customer's Telegram name, drawn from realistic names (`bench/people.py`), the same
    for a customer in every run with the same seed. Names matter: contacts runs a duplicate
    search for every new chat, and customers all called "Bench UserN" were near-duplicates of
    one another (one edit apart), which made every search match every contact."""

    def __init__(self, seed: int) -> None:
        self.people = People(seed)
        self.names: list[str] = []

    def update(self, update_id: int, user: int, text: str) -> bytes:
        while len(self.names) <= user:
            self.names.append(self.people.name())
        first, _, last = self.names[user].partition(" ")
        return orjson.dumps(
            desk.telegram_update(
                update_id,
                text,
                user_id=USER_BASE + user,
                first_name=first,
                last_name=last or None,
                username=f"bench_user_{user}",
            )
        )


@dataclass
class Plan:
    name: str
    posts: list[Post]
    users_new: set[int]  # customers who write for the first time in this run

    @property
    def new_users(self) -> int:
        return len(self.users_new)


def throughput_plan(
    messages: int, users: int, rng: random.Random, ids: Iterable[int], customers: Customers
) -> Plan:
    """`messages` updates from `users` customers (each writes at least once), shuffled."""
    users = min(users, messages)
    senders = [i % users for i in range(messages)]
    rng.shuffle(senders)
    posts = [
        Post(f"tp-{k}", user, customers.update(update_id, user, f"tp-{k}"))
        for k, (user, update_id) in enumerate(zip(senders, ids, strict=False))
    ]
    return Plan("throughput", posts, set(range(users)))


def latency_plan(
    messages: int,
    known_users: int,
    new_share: float,
    rng: random.Random,
    ids: Iterable[int],
    customers: Customers,
) -> Plan:
    """Returning customers (open chats) mixed with new ones (whose first message opens a chat)."""
    pool = list(range(known_users))
    next_user = known_users
    posts = []
    for k, update_id in zip(range(messages), ids, strict=False):
        if rng.random() < new_share or not pool:
            user, next_user = next_user, next_user + 1
            pool.append(user)
        else:
            user = rng.choice(pool)
        posts.append(Post(f"lt-{k}", user, customers.update(update_id, user, f"lt-{k}")))
    return Plan("latency", posts, set(range(known_users, next_user)))


WEBHOOK_HEADERS = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}


async def send(client: aiohttp.ClientSession, path: str, post: Post) -> None:
    """One webhook POST. aiohttp, not httpx, generates the load: measured here, httpx costs
    1-3 ms of CPU per request at 4-48 connections and tops out near 340 req/s at 48, so it
    would mostly measure itself (aiohttp: ~0.1 ms, >7,000 req/s)."""
    post.start = time.monotonic()
    try:
        async with client.post(path, data=post.body, headers=WEBHOOK_HEADERS) as response:
            await response.read()
            post.status = response.status
    except (aiohttp.ClientError, TimeoutError):
        post.status = -1
    post.end = time.monotonic()


async def post_flat_out(
    client: aiohttp.ClientSession, path: str, posts: list[Post], concurrency: int
) -> None:
    pending = iter(posts)

    async def worker() -> None:
        for post in pending:
            await send(client, path, post)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post_paced(
    client: aiohttp.ClientSession, path: str, posts: list[Post], per_s: float, concurrency: int
) -> float:
    """Start one post every 1/per_s seconds (at most `concurrency` in flight); worst slip."""
    slots = asyncio.Semaphore(concurrency)
    tasks = []
    slip = 0.0

    async def one(post: Post) -> None:
        try:
            await send(client, path, post)
        finally:
            slots.release()

    start = time.monotonic() + 0.05
    for k, post in enumerate(posts):
        due = start + k / per_s
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        post.due = due
        await slots.acquire()
        slip = max(slip, time.monotonic() - due)
        tasks.append(asyncio.create_task(one(post)))
    await asyncio.gather(*tasks)
    return slip
