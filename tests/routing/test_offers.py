"""Who gets which chat: the queue's rule, capacity, and waiting chats handed out oldest first
the moment an agent has room."""

from __future__ import annotations

import asyncio

import pytest

from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatCompleted, ChatOpened
from services.routing import service
from services.routing.models import QueuePatch
from services.routing.offers import QUEUES, QueueRow
from tests.routing.conftest import Desk


async def complete(desk: Desk, chat_id: str) -> None:
    async with desk.db.transaction() as session:
        await service.close_chat(
            session,
            ChatCompleted(chat_id=chat_id, agent_id=None, completed_by=None, completed_at=utcnow()),
        )


async def test_least_busy_offers_to_the_agent_with_fewest_open_chats(desk: Desk) -> None:
    queue = await desk.queue(["a", "b", "c"], capacity=3)
    for agent in "abc":
        await desk.status(agent, "active")
    [first] = await desk.open(queue)
    [owner] = (await desk.offers())[first]
    await desk.accept(first, owner)
    # The owner has one chat; the two others none: they get the next two, one each.
    two = await desk.open(queue, 2)
    offers = await desk.offers()
    assert {a for chat in two for a in offers[chat]} == set("abc") - {owner}


async def test_ties_go_to_the_agent_longest_since_their_last_acceptance(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"], capacity=5)
    await desk.status("a", "active")
    [one] = await desk.open(queue)
    await desk.accept(one, "a")
    await complete(desk, one)
    await desk.status("b", "active")
    [two] = await desk.open(queue)
    await desk.accept(two, "b")
    await complete(desk, two)
    # Both have no chat now; a accepted longer ago.
    [three] = await desk.open(queue)
    assert (await desk.offers())[three] == {"a"}


async def test_round_robin_takes_members_in_turn(desk: Desk) -> None:
    queue = await desk.queue(["a", "b", "c"], routing_rule="round_robin", capacity=10)
    for agent in "abc":
        await desk.status(agent, "active")
    chats = [(await desk.open(queue))[0] for _ in range(6)]
    offers = await desk.offers()
    assert [offers[c].pop() for c in chats] == ["a", "b", "c", "a", "b", "c"]


async def test_everyone_rule_offers_to_all_and_the_first_to_accept_wins(desk: Desk) -> None:
    queue = await desk.queue(["a", "b", "c"], routing_rule="everyone")
    for agent in "abc":
        await desk.status(agent, "active")
    [chat] = await desk.open(queue)
    offered = await desk.events("chat.offered")
    assert sorted(e["agent_id"] for e in offered) == ["a", "b", "c"]
    assert all(e["expires_at"] is None for e in offered)  # such an offer stands

    await desk.tick(after_s=3600)
    assert (await desk.offers())[chat] == {"a", "b", "c"}

    await desk.accept(chat, "b")
    assert (await desk.assignment(chat)).agent_id == "b"
    withdrawn = await desk.events("chat.offer_withdrawn")
    assert sorted((e["agent_id"], e["reason"]) for e in withdrawn) == [
        ("a", "taken"),
        ("c", "taken"),
    ]
    with pytest.raises(service.NotOffered):
        await desk.accept(chat, "a")
    await desk.accept(chat, "b")  # accepting twice is harmless


async def test_everyone_rule_offers_what_waits_to_agents_who_come_later(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"], routing_rule="everyone")
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.status("b", "active")
    assert (await desk.offers())[chat] == {"a", "b"}


async def test_capacity_holds_chats_back_until_one_is_completed(desk: Desk) -> None:
    queue = await desk.queue(["a"], capacity=1)
    await desk.status("a", "active")
    first, second, _third = await desk.open(queue, 3)
    assert set(await desk.offers()) == {first}
    await desk.accept(first, "a")
    assert set(await desk.offers()) == set()  # owning one chat fills the slot too
    await complete(desk, first)
    assert set(await desk.offers()) == {second}  # the oldest waiting chat comes first


async def test_waiting_chats_go_out_oldest_first_when_an_agent_turns_active(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"], capacity=2)
    chats = await desk.open(queue, 5)
    assert await desk.offers() == {}  # nobody is active: everything waits
    assert [e["type"] for e in await desk.events("chat.queued")] == ["chat.queued"] * 5
    await desk.status("a", "active")
    assert set(await desk.offers()) == set(chats[:2])
    await desk.status("b", "active")
    assert set(await desk.offers()) == set(chats[:4])


async def test_an_agent_going_inactive_hands_their_offers_to_others(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"])
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.status("b", "active")
    await desk.events()
    await desk.status("a", "inactive")
    events = await desk.events()
    assert [(e["type"], e.get("agent_id")) for e in events] == [
        ("agent.status_changed", "a"),
        ("chat.offer_withdrawn", "a"),
        ("chat.offered", "b"),
    ]
    assert (await desk.offers())[chat] == {"b"}


async def test_only_active_members_get_offers(desk: Desk) -> None:
    queue = await desk.queue(["a"])
    await desk.status("outsider", "active")
    [chat] = await desk.open(queue)
    assert await desk.offers() == {}
    await desk.status("a", "active")
    assert (await desk.offers())[chat] == {"a"}


async def test_leaving_a_queue_takes_back_its_offers(desk: Desk) -> None:
    queue = await desk.queue(["a", "b"])
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.status("b", "active")
    async with desk.db.transaction() as session:
        await service.update_queue(session, queue, QueuePatch(agent_ids=["b"]))
    assert (await desk.offers())[chat] == {"b"}


def opened(queue_id: str) -> ChatOpened:
    return ChatOpened(
        chat_id=new_id(),
        contact_id=new_id(),
        channel_id="channel-1",
        queue_id=queue_id,
        platform="telegram",
        opened_at=utcnow(),
    )


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # SQLite: one writer at a time
async def test_an_agent_in_two_queues_is_never_offered_past_their_capacity(desk: Desk) -> None:
    """An agent's load counts every queue's offers: a queue offering to them waits for the
    other queues they are in."""
    one = await desk.queue(["a"], capacity=1)
    two = await desk.queue(["a", "b"], capacity=1)
    await desk.status("a", "active")
    await desk.status("b", "active")
    # A chat reaches each queue at the same moment (two replicas).
    async with driver_transaction(desk.db) as first:
        await service.queue_chats(first, [opened(one)])
        second = asyncio.create_task(desk.open(two))
        await asyncio.sleep(0.5)
        assert not second.done()  # waiting for the first queue, which shares a
    [chat] = await second
    assert (await desk.offers())[chat] == {"b"}  # a's one slot went to the first queue's chat


def test_a_locked_queue_reads_every_column_of_its_row() -> None:
    """`QueueRow` is written out for the type checker: a column added to the table must be
    added to it too, or routing would not see it."""
    assert QueueRow._fields == tuple(QUEUES.c.keys())
