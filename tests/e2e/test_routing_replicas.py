"""Two routing replicas on one PostgreSQL database and RabbitMQ vhost, under load, judged by what
agents see: a chat is never offered to two agents at once (least busy), is accepted exactly once
however many agents race for it (everyone), and is never stranded when a replica dies mid-offer;
timers are rows, so offers that lapse while no replica runs expire once one is back.

Distributed only. Both replicas consume the same queues and run a clock; the gateway calls the
first, and the tests call the second's internal API directly, as a second gateway would. What an
agent sees is its WebSocket: each offer is an interval from `chat.offered` (`offered_at`) to the
`chat.accepted`, `chat.offer_expired` or `chat.offer_withdrawn` that ends it, by routing's
times (events may arrive out of order: two replicas relay them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from libs.common.service import INTERNAL_TOKEN_HEADER
from tests.support import backends
from tests.support.desk import AGENT_PASSWORD, SECRET, new_bot_token, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Console, Product, running

pytestmark = pytest.mark.e2e

REPLICA = "routing-2"  # the second routing process; the product's own is "routing"
ACCEPT_TIMEOUT_S = 5  # the least a queue allows
STAFF = 10  # agents, shared by the tests
ENDS = {"chat.accepted", "chat.offer_expired", "chat.offer_withdrawn"}


@pytest.fixture(scope="module")
async def replicated(
    servers: backends.Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Product]:
    """A distributed product of its own (these tests kill routing) with a second routing
    replica."""
    database_url, amqp_url = await servers.fresh()
    data_dir: Path = tmp_path_factory.mktemp("replicas")
    async with running(
        "distributed", data_dir, database_url=database_url, amqp_url=amqp_url
    ) as product:
        await product.add_replica("routing", REPLICA)
        yield product


@pytest.fixture(scope="module")
async def staff(replicated: Product) -> AsyncIterator[tuple[Console, list[Console]]]:
    """The admin's console, and agents logged in (each test makes a queue of some of them:
    creating and logging in an agent is a slow password hash, twice)."""
    suffix = secrets.token_hex(4)
    admin = await Console.login(replicated, "admin", ADMIN_PASSWORD)
    consoles = []
    for n in range(STAFF):  # one at a time: each hash takes a core
        response = await admin.http.post(
            "/api/admin/agents",
            json={
                "username": f"agent-{n}-{suffix}",
                "password": AGENT_PASSWORD,
                "display_name": f"Agent {n}",
                "role": "agent",
            },
        )
        assert response.status_code == 201, response.text
        consoles.append(await Console.login(replicated, f"agent-{n}-{suffix}", AGENT_PASSWORD))
    yield admin, consoles
    for console in (admin, *consoles):
        await console.close()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Offer:
    """One offer of a chat to an agent, as the agent's WebSocket told it."""

    chat_id: str
    agent_id: str
    start: datetime | None = None
    expires: datetime | None = None
    end: datetime | None = None
    how: str = ""  # the ending event's type (and a withdrawal's reason)

    def __str__(self) -> str:
        start, end = (t.time().isoformat() if t else "?" for t in (self.start, self.end))
        return f"{self.agent_id[:8]} {start}..{end} {self.how}"


@dataclass
class Attempt:
    chat_id: str
    agent_id: str
    via: str  # "gateway" (routing, the first replica) or REPLICA's internal API
    status: int  # 0: no answer (the replica was killed)


@dataclass
class Agent:
    """An agent with a console open: their API client and what their WebSocket delivered."""

    console: Console
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.console.me["id"])


class Team:
    """A queue of agents with one Telegram channel, the customers who write to it, and the
    agents' reactions to what their consoles show of that queue (`on_offer`; an accepted chat
    is completed soon after, to free its slot)."""

    def __init__(
        self, product: Product, fake: FakeTelegram, staff: tuple[Console, list[Console]]
    ) -> None:
        self.product = product
        self.fake = fake
        self.admin, self.staff = staff
        self.queue_id = ""
        self.agents: list[Agent] = []
        self.attempts: list[Attempt] = []
        self.replica_alive = True
        self.on_offer: Callable[[Agent, dict[str, Any]], None] = lambda agent, data: None
        self.complete_after_s = (0.3, 1.5)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self._stack = contextlib.AsyncExitStack()
        self._updates = 0
        self._users = 10**9 + secrets.randbelow(10**9)
        self.replica = httpx.AsyncClient(
            base_url=product.url(REPLICA),
            headers={INTERNAL_TOKEN_HEADER: product.env["CHATDESK_INTERNAL_TOKEN"]},
            timeout=20,
        )
        self.ingest = httpx.AsyncClient(base_url=product.ingest, timeout=20)

    async def __aenter__(self) -> Team:
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()
        for agent in self.agents:  # the next test's queue finds them with every slot free
            for chat in await agent.console.list_chats("active"):
                await agent.console.http.post(f"/api/chats/{chat['id']}/complete")
        await self.replica.aclose()
        await self.ingest.aclose()

    async def form(self, size: int, **queue: Any) -> None:
        """A new queue of `size` agents with these options, and a channel to it; each agent
        opens a console (WebSocket) and turns active."""
        suffix = secrets.token_hex(4)
        consoles = self.staff[:size]
        response = await self.admin.http.post(
            "/api/admin/queues",
            json={
                "name": f"Queue {suffix}",
                "agent_ids": [c.me["id"] for c in consoles],
                "reply_timeout_s": 600,
                **queue,
            },
        )
        assert response.status_code == 201, response.text
        self.queue_id = response.json()["id"]
        response = await self.admin.http.post(
            "/api/admin/channels",
            json={
                "kind": "telegram",
                "name": f"Bot {suffix}",
                "queue_id": self.queue_id,
                "token": new_bot_token(),
                "secret": SECRET,
                "api_base": self.fake.url,
            },
        )
        assert response.status_code == 201, response.text
        self.channel_id = response.json()["id"]
        for console in consoles:
            agent = Agent(console)
            self.agents.append(agent)
            ws = await self._stack.enter_async_context(websockets.connect(console.ws_url()))
            self.spawn(self._listen(agent, ws))
        for agent in self.agents:
            response = await agent.console.http.put("/api/me/status", json={"status": "active"})
            assert response.json()["status"] == "active", response.text

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # type: ignore[arg-type]

    def check_no_failures(self) -> None:
        if self._failures:
            raise self._failures[0]

    async def _listen(self, agent: Agent, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            event = json.loads(raw)
            if event["data"].get("queue_id") != self.queue_id:
                continue  # another test's queue (the agents are shared), or no routing event
            agent.events.append(event)
            if event["type"] == "chat.offered":
                self.on_offer(agent, event["data"])
            elif event["type"] == "chat.accepted":
                self.spawn(self._complete_soon(agent, event["data"]["chat_id"]))

    async def _complete_soon(self, agent: Agent, chat_id: str) -> None:
        await asyncio.sleep(random.uniform(*self.complete_after_s))
        response = await agent.console.http.post(f"/api/chats/{chat_id}/complete")
        assert response.status_code == 200, response.text

    async def write(self, customers: int) -> None:
        """`customers` new customers each send one message (new chats), all at once."""
        first = self._updates
        self._updates += customers
        await asyncio.gather(*(self._write(first + n) for n in range(customers)))

    async def _write(self, n: int) -> None:
        update = telegram_update(
            n + 1, f"Hello, I am customer {n}", user_id=self._users + n, first_name=f"C{n}"
        )
        response = await self.ingest.post(
            f"/webhooks/telegram/{self.channel_id}",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert response.status_code == 200, response.text

    @property
    def customers(self) -> int:
        return self._updates

    async def accept(self, agent: Agent, chat_id: str, via: str = "gateway") -> int:
        """Accept through the public API (the gateway calls the first replica), or through the
        second replica's internal API; the status answered (0: no answer)."""
        try:
            if via == "gateway":
                response = await agent.console.http.post(f"/api/chats/{chat_id}/accept")
            else:
                response = await self.replica.post(
                    f"/internal/assignments/{chat_id}/accept", json={"agent_id": agent.id}
                )
            status = response.status_code
        except httpx.TransportError:
            if via == "gateway" or self.replica_alive:
                raise
            status = 0  # the replica was killed meanwhile
        self.attempts.append(Attempt(chat_id, agent.id, via, status))
        return status

    def other_path(self) -> str:
        """The second replica while it runs (once killed, its port may serve someone else)."""
        return REPLICA if self.replica_alive else "gateway"

    # --- what the consoles saw ---------------------------------------------------------

    def events(self, *types: str) -> Iterable[dict[str, Any]]:
        for agent in self.agents:
            for event in agent.events:
                if event["type"] in types:
                    yield event["data"]

    def acceptances(self) -> dict[str, list[dict[str, Any]]]:
        """chat -> its `chat.accepted` events (distinct events: a redelivery is one)."""
        found: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        for agent in self.agents:
            for event in agent.events:
                if event["type"] == "chat.accepted":
                    found[event["data"]["chat_id"]][event["id"], agent.id] = event["data"]
        return {chat_id: list(events.values()) for chat_id, events in found.items()}

    def offers(self) -> tuple[dict[str, list[Offer]], list[str]]:
        """chat -> its offers, in order; and what does not pair up (yet): an offer without an
        end, or an end without an offer."""
        chats: dict[str, list[Offer]] = defaultdict(list)
        unpaired = []
        for agent in self.agents:
            per_chat: dict[str, list[tuple[datetime, int, dict[str, Any], str]]] = defaultdict(list)
            for event in agent.events:
                data, kind = event["data"], event["type"]
                if kind == "chat.offered":
                    per_chat[data["chat_id"]].append((at(data["offered_at"]), 1, data, kind))
                elif kind in ENDS:
                    when = data.get("accepted_at") or data.get("expired_at")
                    when = when or data["withdrawn_at"]
                    per_chat[data["chat_id"]].append((at(when), 0, data, kind))
            for chat_id, timeline in per_chat.items():
                open_offer: Offer | None = None
                for when, _, data, kind in sorted(timeline, key=lambda e: e[:2]):
                    if kind == "chat.offered":
                        if open_offer is not None:
                            unpaired.append(f"{chat_id}: offered again before an end: {data}")
                        expires = data["expires_at"] and at(data["expires_at"])
                        open_offer = Offer(chat_id, agent.id, when, expires)
                        chats[chat_id].append(open_offer)
                    elif open_offer is None:
                        unpaired.append(f"{chat_id}: {kind} of no offer: {data}")
                    else:
                        open_offer.end = when
                        open_offer.how = kind + (f":{data['reason']}" if "reason" in data else "")
                        open_offer = None
                if open_offer is not None:
                    unpaired.append(f"{chat_id}: offer to {agent.id} never ended")
        for offers in chats.values():
            offers.sort(key=lambda o: o.start or datetime.min.replace(tzinfo=UTC))
        return chats, unpaired

    async def settle(self, timeout: float) -> None:
        """Wait until every customer's chat is accepted and every offer seen has paired up."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_no_failures()
            accepted = self.acceptances()
            _, unpaired = self.offers()
            if len(accepted) >= self.customers and not unpaired:
                return
            if time.monotonic() > deadline:
                offered = {e["chat_id"] for e in self.events("chat.offered")}
                raise AssertionError(
                    f"after {timeout}s: {len(accepted)} of {self.customers} customers' chats "
                    f"accepted; offered but never accepted: {sorted(offered - set(accepted))}; "
                    f"unpaired: {unpaired[:10]}\n{self.product.log()[-3000:]}"
                )
            await asyncio.sleep(0.2)

    def check_accepted_once(self) -> dict[str, str]:
        """Every customer's chat accepted exactly once, by an agent who was answered 200, and
        nobody else was answered 200 for it; returns chat -> owner."""
        accepted = self.acceptances()
        twice = {c: [e["agent_id"] for e in a] for c, a in accepted.items() if len(a) != 1}
        assert not twice, f"chats accepted more than once: {twice}"
        owner = {chat_id: events[0]["agent_id"] for chat_id, events in accepted.items()}
        assert len(owner) == self.customers  # no chat stranded, none invented
        offered = {e["chat_id"]: e["contact_id"] for e in self.events("chat.offered")}
        assert len({offered[c] for c in owner}) == self.customers  # one chat per customer
        wrong = [a for a in self.attempts if a.status == 200 and owner.get(a.chat_id) != a.agent_id]
        assert not wrong, f"200 for an agent who does not own the chat: {wrong}"
        return owner


def overlaps(offers: list[Offer]) -> list[tuple[Offer, Offer]]:
    """Offers of one chat that stood at the same time (`offers` sorted by start)."""
    found = []
    for n, later in enumerate(offers):
        for earlier in offers[:n]:
            assert earlier.end is not None and later.start is not None
            if later.start < earlier.end:
                found.append((earlier, later))
    return found


async def test_under_everyone_one_agent_wins_each_chat_across_replicas(
    replicated: Product, fake_telegram: FakeTelegram, staff: tuple[Console, list[Console]]
) -> None:
    """Every available agent is offered each chat and all of them race to accept it, half
    through each replica: exactly one is answered 200 and owns it."""
    rng = random.Random(1)
    async with Team(replicated, fake_telegram, staff) as team:
        # Room for every chat with every agent (16 chats, 5 x 5 places): a full agent is
        # offered nothing, and the race below wants each chat offered through both replicas.
        await team.form(5, routing_rule="everyone", capacity=5, accept_timeout_s=ACCEPT_TIMEOUT_S)
        paths = {a.id: ("gateway" if n % 2 == 0 else REPLICA) for n, a in enumerate(team.agents)}

        async def race(agent: Agent, chat_id: str) -> None:
            await asyncio.sleep(rng.uniform(0, 0.05))
            status = await team.accept(agent, chat_id, paths[agent.id])
            # A loser: routing's 409, or the gateway's 404 once the offer is gone (the chat is
            # no longer theirs to see).
            assert status in (200, 404, 409), status

        team.on_offer = lambda agent, data: team.spawn(race(agent, data["chat_id"]))
        await team.write(8)
        await asyncio.sleep(1)
        await team.write(8)
        await team.settle(timeout=45)

        owner = team.check_accepted_once()
        tries: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in team.attempts:
            tries[attempt.chat_id].append(attempt)
        for chat_id, attempts in tries.items():
            assert [a.agent_id for a in attempts if a.status == 200] == [owner[chat_id]]
        # The race was real: most chats had several takers, through both replicas.
        raced = [c for c, a in tries.items() if len({t.via for t in a if t.status}) == 2]
        assert len(raced) >= len(owner) // 2, {c: len(a) for c, a in tries.items()}
        offers, _ = team.offers()
        accepted_at = {c: at(e[0]["accepted_at"]) for c, e in team.acceptances().items()}
        for chat_id, chat_offers in offers.items():
            for offer in chat_offers:  # the others' offers end in the winner's transaction
                if offer.agent_id != owner[chat_id]:
                    assert offer.how == "chat.offer_withdrawn:taken", offer
                    assert offer.end == accepted_at[chat_id], offer
        team.check_no_failures()


async def test_least_busy_offers_one_at_a_time_and_a_killed_replica_strands_nothing(
    replicated: Product, fake_telegram: FakeTelegram, staff: tuple[Console, list[Console]]
) -> None:
    """Ten agents, capacity 2, offers lapsing after 5 s, customers writing in bursts; agents
    accept at once, late (racing the clock) or not at all, sometimes twice at once through both
    replicas, while another agent tries to take the same chat, and now and then one steps away
    for a second. The second replica is SIGKILLed in the middle of a burst, with offers standing
    that it may have made and that expire after it died."""
    rng = random.Random(2)
    lapsed: set[str] = set()
    async with Team(replicated, fake_telegram, staff) as team:
        await team.form(10, capacity=2, accept_timeout_s=ACCEPT_TIMEOUT_S)

        async def take(agent: Agent, chat_id: str, delay: float, double: bool) -> None:
            await asyncio.sleep(max(0.0, delay))
            intruder = rng.choice([a for a in team.agents if a is not agent])
            first, second = rng.sample(["gateway", team.other_path()], 2)
            tries = [team.accept(agent, chat_id, first)]
            if double:  # the same agent, twice at once, through both replicas
                tries.append(team.accept(agent, chat_id, second))
            if rng.random() < 0.4:  # someone else, for a chat not offered to them
                via = rng.choice(["gateway", team.other_path()])
                tries.append(team.accept(intruder, chat_id, via))
            for status in await asyncio.gather(*tries):
                assert status in (0, 200, 404, 409), status

        def on_offer(agent: Agent, data: dict[str, Any]) -> None:
            chat_id, plan = data["chat_id"], rng.random()
            if chat_id not in lapsed and plan < 0.35:
                lapsed.add(chat_id)  # let it lapse: the clock offers it to someone else
                return
            if plan < 0.5:  # at the last moment: the accept races the clock
                delay = (at(data["expires_at"]) - now()).total_seconds() - 0.1
            else:
                delay = rng.uniform(0.05, 0.8)
            team.spawn(take(agent, chat_id, delay, double=rng.random() < 0.3))

        async def breaks() -> None:  # now and then an agent steps away: offers withdrawn
            while True:
                await asyncio.sleep(2)
                agent = rng.choice(team.agents)
                await agent.console.http.put("/api/me/status", json={"status": "inactive"})
                await asyncio.sleep(1)
                await agent.console.http.put("/api/me/status", json={"status": "active"})

        team.on_offer = on_offer
        away = asyncio.create_task(breaks())
        await team.write(14)
        await asyncio.sleep(2.5)
        deadline = time.monotonic() + 20  # the replica to be killed is deciding accepts
        while not any(a.via == REPLICA and a.status for a in team.attempts):
            assert time.monotonic() < deadline, "no accept went through the second replica"
            await asyncio.sleep(0.1)
        # The second burst: the replica dies while its chats are being opened and offered.
        burst = asyncio.create_task(team.write(14))
        await asyncio.sleep(0.3)
        team.replica_alive = False
        killed_at = now()
        replicated.kill(REPLICA)
        await burst
        await asyncio.sleep(1.5)
        await team.write(10)
        away.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await away
        for agent in team.agents:  # back from any break
            await agent.console.http.put("/api/me/status", json={"status": "active"})
        # A dead replica's unrelayed events wait for their outbox lease (30 s) to be taken over.
        await team.settle(timeout=70)

        team.check_accepted_once()
        offers, _ = team.offers()
        for chat_id, chat_offers in offers.items():
            assert not overlaps(chat_offers), (
                f"chat {chat_id} offered to two agents at once:\n"
                + "\n".join(map(str, chat_offers))
            )
        every = [o for chat_offers in offers.values() for o in chat_offers]
        # The survivor's clock fired offers that stood when the replica died.
        assert any(
            o.how == "chat.offer_expired" and o.start and o.end and o.start < killed_at < o.end
            for o in every
        ), "no offer expired across the kill"
        assert any(o.start and o.start > killed_at for o in every)
        withdrawn = {o.how for o in every if o.how.startswith("chat.offer_withdrawn")}
        assert withdrawn <= {"chat.offer_withdrawn:agent_unavailable"}  # breaks only
        team.check_no_failures()


async def test_offers_lapse_on_time_after_every_replica_was_down(
    replicated: Product, fake_telegram: FakeTelegram, staff: tuple[Console, list[Console]]
) -> None:
    """Offers stand, both routing processes are killed, the accept limit passes with no clock
    running anywhere; once routing is back, the lapsed offers expire and their chats go to
    the other agents."""
    async with Team(replicated, fake_telegram, staff) as team:
        taking = False

        async def take(agent: Agent, chat_id: str) -> None:
            await asyncio.sleep(0.2)
            assert await team.accept(agent, chat_id) in (200, 404, 409)

        def on_offer(agent: Agent, data: dict[str, Any]) -> None:
            if taking:
                team.spawn(take(agent, data["chat_id"]))

        team.on_offer = on_offer
        # Long enough for the offers to reach the consoles before they lapse, on a busy machine.
        await team.form(4, capacity=1, accept_timeout_s=8)
        await team.write(2)
        deadline = time.monotonic() + 30
        while len({e["chat_id"] for e in team.events("chat.offered")}) < 2:
            assert time.monotonic() < deadline, "the chats were not offered"
            await asyncio.sleep(0.1)
        first = list(team.events("chat.offered"))
        team.replica_alive = False
        for unit in ("routing", REPLICA):
            if unit in replicated.processes:
                replicated.kill(unit)
        killed_at = now()
        standing = [o for o in first if at(o["expires_at"]) > killed_at]
        assert standing, f"the offers expired before routing was killed: {first}"
        lapse = max(at(o["expires_at"]) for o in standing)
        await asyncio.sleep((lapse - now()).total_seconds() + 1)
        offered = {(o["chat_id"], o["agent_id"]) for o in standing}
        expired = {(e["chat_id"], e["agent_id"]) for e in team.events("chat.offer_expired")}
        assert not offered & expired  # no clock ran meanwhile

        taking = True
        restarted_at = now()
        replicated.start("routing")
        replicated.start(REPLICA)
        await replicated.wait_ready(("routing", REPLICA))
        team.replica_alive = True
        await team.settle(timeout=40)

        owner = team.check_accepted_once()
        offers, _ = team.offers()
        for offer in standing:
            chat_offers = offers[offer["chat_id"]]
            assert not overlaps(chat_offers), "\n".join(map(str, chat_offers))
            [lapsed] = [o for o in chat_offers if o.agent_id == offer["agent_id"]]
            assert lapsed.how == "chat.offer_expired" and lapsed.end, lapsed
            assert lapsed.end >= restarted_at  # fired by a restarted process
            assert owner[offer["chat_id"]] != offer["agent_id"]  # passed on to someone else
        team.check_no_failures()
