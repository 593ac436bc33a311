"""The bus contract (libs/common/bus/base.py), checked on both transports alike.

Every transport test runs against `InMemoryBus` and against `RabbitBus` on a real broker (one fresh
vhost for this module, a fresh exchange per test, so tests never see each other's queues).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from uuid import uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from libs.common.batching import GroupCommit
from libs.common.bus import Bus, Handler, InMemoryBus, RabbitBus, topic_matches
from libs.common.bus.rabbitmq import ATTEMPTS_HEADER
from libs.common.envelope import Envelope
from tests.support.backends import Servers

MAX_ATTEMPTS = 3
RETRY_DELAY_S = 0.1
DEADLINE_S = 10.0


def envelope(event_type: str, **data: object) -> Envelope:
    return Envelope(type=event_type, source="test", subject="chat-1", data=data)


async def eventually(check: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `check` until it holds; fail the test with `what` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """A handler that records every envelope it is given."""

    received: list[Envelope] = field(default_factory=list)

    async def __call__(self, envelope: Envelope) -> None:
        self.received.append(envelope)

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.received]


@dataclass
class Buses:
    """Makes the buses of one test, on one transport and one exchange; stops them afterwards."""

    transport: str
    amqp_url: str
    exchange: str = field(default_factory=lambda: f"test-{uuid4().hex[:8]}")
    made: list[Bus] = field(default_factory=list)

    def new(self, *, prefetch: int = 1) -> Bus:
        bus: Bus
        if self.transport == "memory":
            bus = InMemoryBus(max_attempts=MAX_ATTEMPTS, retry_delay_s=RETRY_DELAY_S)
        else:
            # prefetch=1 unless a test wants more: a group handles one message at a time, so when
            # it has seen the last message published it has seen every earlier one too.
            bus = RabbitBus(
                self.amqp_url,
                exchange=self.exchange,
                max_attempts=MAX_ATTEMPTS,
                retry_delay_s=RETRY_DELAY_S,
                prefetch=prefetch,
            )
        self.made.append(bus)
        return bus

    async def read_dlq(self, group: str, *, expect: int) -> list[AbstractIncomingMessage]:
        """Take `expect` messages off the group's dead-letter queue, as an operator would."""
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(f"{self.exchange}.{group}.dlq", ensure=True)
            messages: list[AbstractIncomingMessage] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while len(messages) < expect and loop.time() < deadline:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                else:
                    messages.append(message)
            return messages
        finally:
            await connection.close()

    async def dlq_depth(self, group: str) -> int:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{self.exchange}.{group}.dlq", passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await connection.close()

    async def stop_all(self) -> None:
        for bus in self.made:
            if bus.started:
                await bus.stop()


@pytest.fixture(scope="module")
async def amqp_url(servers: Servers) -> str:
    return servers.fresh_vhost()


@pytest.fixture(params=["memory", "rabbitmq"])
async def buses(request: pytest.FixtureRequest, amqp_url: str) -> AsyncIterator[Buses]:
    made = Buses(request.param, amqp_url)
    yield made
    await made.stop_all()


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[Buses]:
    made = Buses("rabbitmq", amqp_url)
    yield made
    await made.stop_all()


# --- topic patterns ----------------------------------------------------------------------------

TOPICS = [
    # (pattern, routing key, matches?) with AMQP topic-exchange semantics
    ("chat.opened", "chat.opened", True),
    ("chat.opened", "chat.completed", False),
    ("chat.opened", "chat.opened.extra", False),
    ("chat.*", "chat.opened", True),
    ("chat.*", "chat", False),
    ("chat.*", "chat.message.received", False),
    ("*.opened", "chat.opened", True),
    ("*.opened", "opened", False),
    ("*.*", "chat", False),
    ("chat.#", "chat", True),
    ("chat.#", "chat.opened", True),
    ("chat.#", "chat.message.received", True),
    ("chat.#", "chatty.opened", False),
    ("#", "chat", True),
    ("#", "inbound.received", True),
    ("#.received", "received", True),
    ("#.received", "inbound.message.received", True),
    ("#.received", "inbound.resolved", False),
    ("chat.#.received", "chat.received", True),
    ("chat.#.received", "chat.message.received", True),
    ("chat.#.received", "chat.message.sent", False),
    ("*.#", "chat", True),
    ("#.*", "chat.opened", True),
    ("a.*.#.z", "a.b.z", True),
    ("a.*.#.z", "a.b.c.d.z", True),
    ("a.*.#.z", "a.z", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), TOPICS)
def test_topic_matches_like_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


# --- routing -----------------------------------------------------------------------------------

SENTINEL = "test.sentinel"  # every group also subscribes to it; published last
GROUPS = {
    "everything": ["#"],
    "chat-direct": ["chat.*"],
    "any-opened": ["*.opened"],
    "chat-deep": ["chat.#"],
    # chat.opened matches both patterns: the group still gets one copy.
    "overlapping": ["chat.*", "*.opened"],
    "exact": ["contact.created"],
}
PUBLISHED = [
    "chat.opened",
    "chat.message.received",
    "contact.created",
    "contact.opened",
    "inbound.received",
    "chat",
]
EXPECTED = {
    "everything": PUBLISHED,
    "chat-direct": ["chat.opened"],
    "any-opened": ["chat.opened", "contact.opened"],
    "chat-deep": ["chat.opened", "chat.message.received", "chat"],
    "overlapping": ["chat.opened", "contact.opened"],
    "exact": ["contact.created"],
}


async def test_every_subscribed_group_gets_each_matching_event_once(buses: Buses) -> None:
    bus = buses.new()
    recorders = {group: Recorder() for group in GROUPS}
    for group, patterns in GROUPS.items():
        bus.subscribe(f"test.{group}", [*patterns, SENTINEL], recorders[group])
    await bus.start()

    published = [envelope(t, n=i) for i, t in enumerate(PUBLISHED)]
    await bus.publish(published)
    await bus.publish([envelope(SENTINEL)])
    await eventually(
        lambda: all(r.types[-1:] == [SENTINEL] for r in recorders.values()),
        "every group to handle the sentinel",
    )

    by_id = {e.id: e for e in published}
    for group, recorder in recorders.items():
        events = recorder.received[:-1]
        assert sorted(e.type for e in events) == sorted(EXPECTED[group]), group
        # What a subscriber sees is the envelope as published: same id, type, time and data.
        assert all(e == by_id[e.id] for e in events), group


async def test_event_without_subscribers_is_accepted(buses: Buses) -> None:
    bus = buses.new()
    recorder = Recorder()
    bus.subscribe("test.chat", ["chat.*"], recorder)
    await bus.start()

    await bus.publish([envelope("nobody.listens"), envelope("chat.opened")])

    await eventually(lambda: recorder.types == ["chat.opened"], "chat.opened to arrive")


def test_a_group_subscribes_once() -> None:
    bus = InMemoryBus(max_attempts=MAX_ATTEMPTS, retry_delay_s=RETRY_DELAY_S)
    bus.subscribe("test.group", ["chat.*"], Recorder())
    with pytest.raises(ValueError, match="subscribed twice"):
        bus.subscribe("test.group", ["contact.*"], Recorder())


async def test_subscribing_after_start_is_refused(buses: Buses) -> None:
    bus = buses.new()
    await bus.start()
    with pytest.raises(RuntimeError, match="before the bus starts"):
        bus.subscribe("test.late", ["chat.*"], Recorder())


# --- retries and dead letters ------------------------------------------------------------------


async def test_failing_handler_is_retried_with_the_same_envelope(buses: Buses) -> None:
    bus = buses.new()
    loop = asyncio.get_running_loop()
    attempts: list[tuple[float, Envelope]] = []

    async def flaky(envelope: Envelope) -> None:
        attempts.append((loop.time(), envelope))
        if len(attempts) < MAX_ATTEMPTS:
            raise ConnectionError("database briefly unavailable")

    bus.subscribe("test.flaky", ["chat.opened"], flaky)
    await bus.start()
    published = envelope("chat.opened", chat_id="c-1")
    await bus.publish([published])

    await eventually(lambda: len(attempts) == MAX_ATTEMPTS, "the third attempt")
    assert [e for _, e in attempts] == [published] * MAX_ATTEMPTS
    times = [t for t, _ in attempts]
    assert all(b - a >= RETRY_DELAY_S * 0.9 for a, b in pairwise(times))
    # It succeeded in the end: nothing was dead-lettered.
    if isinstance(bus, InMemoryBus):
        assert bus.dead_letters == {}
    else:
        assert await buses.dlq_depth("test.flaky") == 0


async def test_handler_that_always_fails_is_dead_lettered(buses: Buses) -> None:
    bus = buses.new()
    attempts: list[Envelope] = []

    async def broken(envelope: Envelope) -> None:
        attempts.append(envelope)
        raise ValueError("cannot handle this event")

    healthy = Recorder()
    bus.subscribe("test.broken", ["chat.opened"], broken)
    bus.subscribe("test.healthy", ["chat.opened"], healthy)
    await bus.start()
    published = envelope("chat.opened", chat_id="c-1")
    await bus.publish([published])

    if isinstance(bus, InMemoryBus):
        # publish returned: every group has handled or dead-lettered the event.
        assert bus.dead_letters == {"test.broken": [published]}
    else:
        [message] = await buses.read_dlq("test.broken", expect=1)
        assert message.message_id == published.id
        # What an outside subscriber reads off every event, kept through the retries.
        assert (message.type, message.content_type) == ("chat.opened", "application/json")
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.headers[ATTEMPTS_HEADER] == MAX_ATTEMPTS
        assert "cannot handle this event" in str(message.headers["x-error"])
        assert Envelope.from_bytes(message.body) == published
        assert await buses.dlq_depth("test.healthy") == 0
    assert attempts == [published] * MAX_ATTEMPTS
    # Another group's copy is unaffected by this group's failures.
    await eventually(lambda: healthy.received == [published], "the healthy group's copy")


# --- RabbitMQ: consumers that die, replicas, a bus that is down ----------------------------------


async def test_unacked_message_is_redelivered_after_a_consumer_crash(rabbit: Buses) -> None:
    crashed_replica = rabbit.new()
    picked_up = asyncio.Event()

    async def hangs(envelope: Envelope) -> None:
        picked_up.set()
        await asyncio.Event().wait()  # never returns, never acks

    crashed_replica.subscribe("test.worker", ["chat.opened"], hangs)
    await crashed_replica.start()
    published = envelope("chat.opened", chat_id="c-1")
    await crashed_replica.publish([published])
    await asyncio.wait_for(picked_up.wait(), DEADLINE_S)
    await crashed_replica.stop()  # its connection goes away with the message unacked

    survivor = rabbit.new()
    recorder = Recorder()
    survivor.subscribe("test.worker", ["chat.opened"], recorder)
    await survivor.start()

    await eventually(lambda: recorder.received == [published], "the redelivery")


async def test_replicas_share_a_group_queue(rabbit: Buses) -> None:
    replicas = [rabbit.new(), rabbit.new()]
    recorders = [Recorder(), Recorder()]
    for bus, recorder in zip(replicas, recorders, strict=True):
        bus.subscribe("test.shared", ["chat.opened"], recorder)
        await bus.start()

    published = [envelope("chat.opened", n=i) for i in range(20)]
    await replicas[0].publish(published)

    def handled() -> list[str]:
        return sorted(e.id for r in recorders for e in r.received)

    await eventually(lambda: len(handled()) >= len(published), "all 20 events")
    assert handled() == sorted(e.id for e in published)


async def test_a_retired_group_s_queue_is_removed(rabbit: Buses) -> None:
    old = rabbit.new()
    old.subscribe("test.retired", ["chat.opened"], Recorder())
    await old.start()
    await old.stop()

    upgraded = rabbit.new()
    upgraded.retire("test.retired")
    await upgraded.start()
    await upgraded.publish([envelope("chat.opened")])  # nothing left to pile up in

    connection = await aio_pika.connect(rabbit.amqp_url)
    try:
        for queue in ("test.retired", "test.retired.retry"):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(f"{rabbit.exchange}.{queue}", passive=True)
    finally:
        await connection.close()


async def redelivered(buses: Buses, group: str) -> list[Envelope]:
    """What a new replica of `group` is given before an event published after it started: the
    messages that earlier replicas left unacked."""
    bus = buses.new()
    recorder = Recorder()
    bus.subscribe(group, ["chat.opened", SENTINEL], recorder)
    await bus.start()
    await bus.publish([envelope(SENTINEL)])
    # Messages given back to the queue go out before those published later.
    await eventually(lambda: SENTINEL in recorder.types, "the sentinel")
    return [e for e in recorder.received if e.type != SENTINEL]


def hanging(when: Callable[[Envelope], bool], handled: list[Envelope]) -> Handler:
    """A handler that never returns (never acks) the envelopes `when` picks, and records the
    others."""

    async def handle(envelope: Envelope) -> None:
        if when(envelope):
            await asyncio.Event().wait()
        handled.append(envelope)

    return handle


async def test_acks_never_cover_a_message_still_being_handled(rabbit: Buses) -> None:
    crashed_replica = rabbit.new(prefetch=10)
    handled: list[Envelope] = []
    first_hangs = hanging(lambda e: e.data["n"] == 0, handled)

    crashed_replica.subscribe("test.worker", ["chat.opened"], first_hangs)
    await crashed_replica.start()
    published = [envelope("chat.opened", n=i) for i in range(5)]
    await crashed_replica.publish(published)
    await eventually(lambda: len(handled) == 4, "the four after the first")
    await crashed_replica.stop()

    # The first one, delivered first, comes back: the acks of those after it did not cover it.
    # They were acked nonetheless, a finished message does not wait for an earlier one's end.
    assert await redelivered(rabbit, "test.worker") == [published[0]]


async def test_acks_count_a_reopened_channel_s_deliveries_anew(rabbit: Buses) -> None:
    bus = rabbit.new(prefetch=10)
    handled: list[Envelope] = []
    hangs_when_told = hanging(lambda e: bool(e.data.get("hang")), handled)

    bus.subscribe("test.worker", ["chat.opened"], hangs_when_told)
    await bus.start()
    before = [envelope("chat.opened", n=i) for i in range(5)]
    await bus.publish(before)
    await eventually(lambda: len(handled) == 5, "the first five")
    await asyncio.sleep(0.1)  # their acks go out

    # A channel error (an ack of a tag never delivered) makes the broker close the consumer's
    # channel; the robust channel reopens and consumes again, its delivery tags from 1 again.
    assert isinstance(bus, RabbitBus)
    [consumer] = bus._consumers
    reopened = asyncio.Event()
    consumer.channel.reopen_callbacks.add(lambda *_: reopened.set())
    await (await consumer.channel.get_underlay_channel()).basic_ack(delivery_tag=1_000)
    await asyncio.wait_for(reopened.wait(), DEADLINE_S)
    await eventually(bus.ready, "consuming on the reopened channel")

    after = [envelope("chat.opened", n=5, hang=True), envelope("chat.opened", n=6)]
    await bus.publish(after)
    await eventually(lambda: len(handled) == 6, "the one after the hanging one")
    await bus.stop()

    assert handled == [*before, after[1]]
    # Tag 2 of the new channel was acked, but not its tag 1, still being handled.
    assert await redelivered(rabbit, "test.worker") == [after[0]]


async def test_every_message_is_acked_once(rabbit: Buses) -> None:
    bus = rabbit.new(prefetch=20)
    out_of_order = [envelope("chat.opened", n=i) for i in range(100)]
    in_order = [envelope("chat.opened", n=i) for i in range(100, 120)]  # a prefetch window
    handled: list[Envelope] = []
    the_rest_handled = asyncio.Event()
    failed: list[Envelope] = []
    arrived: list[Envelope] = []
    all_arrived = asyncio.Event()

    async def commit(batch: list[Envelope]) -> list[None]:
        handled.extend(batch)
        if len(handled) == len(out_of_order) - 1:
            the_rest_handled.set()
        return [None] * len(batch)

    # Batches finish together, as the product's handlers do. In the first burst one message fails
    # once (its retry copy is published before its ack) and the first one finishes last; the
    # second burst is one batch, acked with one frame.
    commits: GroupCommit[Envelope, None] = GroupCommit(commit, name="test.batches")

    async def handler(envelope: Envelope) -> None:
        if envelope == out_of_order[50] and not failed:
            failed.append(envelope)
            raise ConnectionError("database briefly unavailable")
        if envelope == out_of_order[0]:
            await asyncio.wait_for(the_rest_handled.wait(), DEADLINE_S)
        if envelope in in_order:
            arrived.append(envelope)
            if len(arrived) == len(in_order):
                all_arrived.set()
            await asyncio.wait_for(all_arrived.wait(), DEADLINE_S)
        await commits.submit(envelope)

    bus.subscribe("test.batches", ["chat.opened"], handler)
    await bus.start()
    try:
        await bus.publish(out_of_order)
        await eventually(lambda: len(handled) == len(out_of_order), "the first burst")
        await bus.publish(in_order)
        await eventually(lambda: len(handled) == len(out_of_order + in_order), "the second")
        await bus.stop()
    finally:
        await commits.stop()

    # An ack of a tag already acked would have closed the channel: redeliveries, seen here.
    assert sorted(e.id for e in handled) == sorted(e.id for e in out_of_order + in_order)
    assert await redelivered(rabbit, "test.batches") == []


async def test_publish_raises_when_the_bus_is_not_running(buses: Buses) -> None:
    bus = buses.new()
    with pytest.raises(RuntimeError):
        await bus.publish([envelope("chat.opened")])

    await bus.start()
    await bus.stop()
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(bus.publish([envelope("chat.opened")]), DEADLINE_S)


# --- InMemoryBus: publishers and shutdown -------------------------------------------------------


async def test_cancelled_publisher_does_not_stop_the_group() -> None:
    bus = InMemoryBus(max_attempts=MAX_ATTEMPTS, retry_delay_s=RETRY_DELAY_S, concurrency=1)
    release = asyncio.Event()
    handled: list[Envelope] = []

    async def slow(envelope: Envelope) -> None:
        await release.wait()
        handled.append(envelope)

    bus.subscribe("test.slow", ["chat.opened"], slow)
    await bus.start()
    try:
        first, second = envelope("chat.opened", n=1), envelope("chat.opened", n=2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bus.publish([first]), 0.05)
        release.set()

        await asyncio.wait_for(bus.publish([second]), 1)
        assert handled == [first, second]
    finally:
        await bus.stop()


@pytest.mark.parametrize("state", ["handling", "waiting-for-retry"])
async def test_stop_unblocks_publishers(state: str) -> None:
    bus = InMemoryBus(max_attempts=MAX_ATTEMPTS, retry_delay_s=60)
    picked_up = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        picked_up.set()
        if state == "handling":
            await asyncio.Event().wait()
        raise ConnectionError("downstream unavailable")

    bus.subscribe("test.group", ["chat.opened"], handler)
    await bus.start()
    publishing = asyncio.create_task(bus.publish([envelope("chat.opened")]))
    await asyncio.wait_for(picked_up.wait(), DEADLINE_S)
    await asyncio.sleep(0)  # let the failed attempt be scheduled for retry
    await bus.stop()

    try:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(publishing, 0.5)
    finally:
        publishing.cancel()
