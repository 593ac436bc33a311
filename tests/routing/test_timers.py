"""The timers routing keeps in its tables, fired by its clock: offers that lapse, answers that
are overdue, idle chats, chats that waited too long, and consoles that went away."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import update

from libs.common.driver import in_session
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatCustomerWaiting, ChatReplyPosted, MessageView
from services.routing import service
from services.routing.models import Offer
from services.routing.offers import lock_queues
from tests.routing.conftest import Desk


def message(chat_id: str, direction: str, at: datetime | None = None) -> MessageView:
    return MessageView(
        id=new_id(),
        chat_id=chat_id,
        direction=direction,  # type: ignore[arg-type]
        text="hello",
        created_at=at or utcnow(),
    )


async def customer_writes(desk: Desk, chat_id: str) -> None:
    """After the last reply (chat announces the wait that starts)."""
    async with desk.db.transaction() as session:
        await service.note_waits(
            session, [ChatCustomerWaiting(chat_id=chat_id, agent_id=None, since=utcnow())]
        )


async def agent_replies(desk: Desk, chat_id: str, agent: str) -> None:
    reply = ChatReplyPosted(
        chat_id=chat_id,
        agent_id=agent,
        channel_id="channel-1",
        platform="telegram",
        external_chat_id="1",
        message=message(chat_id, "out"),
    )
    async with desk.db.transaction() as session:
        await service.note_replies(session, [reply])


async def test_a_lapsed_offer_moves_on_and_never_straight_back(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"], accept_timeout_s=30)
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.status("b", "active")
    await desk.events()

    await desk.tick(after_s=10)
    assert (await desk.offers())[chat] == {"a"}  # not yet
    await desk.tick(after_s=31)
    events = await desk.events()
    assert [(e["type"], e["agent_id"]) for e in events] == [
        ("chat.offer_expired", "a"),
        ("chat.offered", "b"),
    ]
    # b lets it lapse too: back to a, who was not the last one passed over.
    await desk.tick(after_s=62)
    assert (await desk.offers())[chat] == {"a"}


async def test_a_lapsed_offer_waits_rather_than_go_back_to_the_same_agent(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"], accept_timeout_s=30)
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.tick(after_s=31)
    assert await desk.offers() == {}
    assert (await desk.assignment(chat)).state == "queued"
    await desk.status("b", "active")
    assert (await desk.offers())[chat] == {"b"}


async def test_an_overdue_answer_raises_an_alert_once(desk: Desk) -> None:
    queue = await desk.queue(["a"], reply_timeout_s=60)
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.accept(chat, "a")
    await desk.events()
    await desk.tick(after_s=50)
    assert await desk.events("chat.reply_overdue") == []
    await desk.tick(after_s=61)
    [overdue] = await desk.events("chat.reply_overdue")
    assert overdue["agent_id"] == "a" and overdue["reoffered"] is False
    await desk.tick(after_s=120)
    assert await desk.events("chat.reply_overdue") == []  # once per wait
    assert (await desk.assignment(chat)).agent_id == "a"

    # An answer ends the wait; the customer's next message starts another.
    await agent_replies(desk, chat, "a")
    await desk.tick(after_s=120)
    assert await desk.events("chat.reply_overdue") == []
    await customer_writes(desk, chat)
    await desk.tick(after_s=61)
    assert len(await desk.events("chat.reply_overdue")) == 1


async def test_an_overdue_chat_is_offered_to_someone_else_if_the_queue_says_so(
    desk: Desk,
) -> None:
    queue = await desk.queue(["a", "b"], reply_timeout_s=60, reoffer_overdue=True)
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.accept(chat, "a")
    await desk.status("b", "active")
    await desk.events()
    await desk.tick(after_s=61)
    assert [(e["type"], e.get("agent_id")) for e in await desk.events()] == [
        ("chat.reply_overdue", "a"),
        ("chat.queued", None),
        ("chat.offered", "b"),
    ]
    assignment = await desk.assignment(chat)
    assert assignment.state == "offered" and assignment.agent_id is None


async def test_a_chat_whose_customer_goes_quiet_is_completed(desk: Desk) -> None:
    queue = await desk.queue(["a"], auto_complete_after_s=600)
    await desk.status("a", "active")
    quiet, talking = await desk.open(queue, 2)
    for chat in (quiet, talking):
        await desk.accept(chat, "a")
        await agent_replies(desk, chat, "a")
    await customer_writes(desk, talking)  # waiting for an answer: not idle
    await desk.events()
    await desk.tick(after_s=599)
    assert await desk.events("chat.completion_due") == []
    await desk.tick(after_s=601)
    [due] = await desk.events("chat.completion_due")
    assert due["chat_id"] == quiet and due["reason"] == "inactivity"
    await desk.tick(after_s=1200)
    assert await desk.events("chat.completion_due") == []


async def test_a_chat_nobody_takes_in_time_is_completed(desk: Desk) -> None:
    queue = await desk.queue(["a"], max_wait_s=300, on_max_wait="complete")
    [chat] = await desk.open(queue)
    await desk.tick(after_s=301)
    [due] = await desk.events("chat.completion_due")
    assert due["chat_id"] == chat and due["reason"] == "max_wait"
    assert (await desk.assignment(chat)).state == "closed"
    await desk.status("a", "active")
    assert await desk.offers() == {}


async def test_a_chat_nobody_takes_in_time_moves_to_the_overflow_queue(desk: Desk) -> None:
    overflow = await desk.queue(["b"])
    queue = await desk.queue(["a"], max_wait_s=300, on_max_wait="move", overflow_queue_id=overflow)
    await desk.status("b", "active")
    [chat] = await desk.open(queue)
    await desk.events()
    await desk.tick(after_s=301)
    events = await desk.events()
    [moved] = [e for e in events if e["type"] == "chat.transferred"]
    assert moved["to_queue_id"] == overflow and moved["by"] is None
    assert (await desk.offers())[chat] == {"b"}


async def test_an_agent_whose_consoles_are_gone_past_the_grace_is_logged_out(
    desk: Desk,
) -> None:
    queue = await desk.queue(["a", "b"], accept_timeout_s=3600)
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.status("b", "active")
    async with desk.db.transaction() as session:
        await service.consoles_seen(session, ["a"])
    await desk.events()

    await desk.tick(after_s=30)  # within the 60 s grace
    assert await desk.events() == []
    await desk.tick(after_s=61)
    events = await desk.events()
    assert (events[0]["type"], events[0]["status"], events[0]["reason"]) == (
        "agent.status_changed",
        "inactive",
        "disconnected",
    )
    assert (await desk.offers())[chat] == {"b"}

    # The console comes back: the status comes back too.
    async with desk.db.transaction() as session:
        returning = await service.consoles_seen(session, ["a"])
    assert returning == ["a"]
    async with desk.db.transaction() as session:
        await service.reconnect(session, "a")
    [back] = await desk.events("agent.status_changed")
    assert (back["status"], back["reason"]) == ("active", "reconnected")


async def test_an_agent_without_a_console_is_never_timed_out(desk: Desk) -> None:
    await desk.queue(["a"])
    await desk.status("a", "active")
    await desk.events()
    await desk.tick(after_s=3600)
    assert await desk.events() == []


async def test_a_clock_that_waited_for_the_queue_acts_at_the_time_it_got_it(desk: Desk) -> None:
    """The clock reads what is due, then waits for the queue's lock (another replica holds it).
    What it does is stamped after what the holder did: a chat is never offered before its
    last offer ended, and a new offer's accept time starts when it is made."""
    queue = await desk.queue(["a", "b"], capacity=1, accept_timeout_s=5)
    await desk.status("a", "active")
    [lapsing] = await desk.open(queue)
    await desk.status("b", "active")
    [other] = await desk.open(queue)
    async with desk.db.transaction() as session:  # a's offer is due now
        await session.execute(
            update(Offer)
            .where(Offer.chat_id == lapsing)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    await desk.events()
    async with desk.db.transaction() as session:  # another replica's work on the queue
        await lock_queues(in_session(session), [queue])
        tick = asyncio.create_task(desk.clock.tick())
        await asyncio.sleep(0.5)
        await service.set_status(session, "b", "inactive")  # b's offer goes back to the queue
    await tick

    events = {e["type"]: e for e in await desk.events()}
    withdrawn = datetime.fromisoformat(events["chat.offer_withdrawn"]["withdrawn_at"])
    expired = datetime.fromisoformat(events["chat.offer_expired"]["expired_at"])
    offered = events["chat.offered"]
    assert (offered["chat_id"], offered["agent_id"]) == (other, "a")
    assert expired >= withdrawn
    assert datetime.fromisoformat(offered["offered_at"]) >= withdrawn
