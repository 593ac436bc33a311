"""Transfers: to an agent, who owns the chat at once; to a queue, where it is offered to
someone other than its owner."""

from __future__ import annotations

import pytest

from services.routing import service
from tests.routing.conftest import Desk
from tests.routing.test_offers import complete


async def transfer(desk: Desk, chat_id: str, **target: str) -> None:
    async with desk.db.transaction() as session:
        await service.transfer(session, chat_id, "supervisor", **target)


async def test_to_an_agent(desk: Desk) -> None:
    queue = await desk.queue(["a"])
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.accept(chat, "a")
    await desk.events()
    await transfer(desk, chat, to_agent="b")
    [moved] = await desk.events("chat.transferred")
    assert (moved["from_agent_id"], moved["to_agent_id"], moved["by"]) == ("a", "b", "supervisor")
    assignment = await desk.assignment(chat)
    assert (assignment.state, assignment.agent_id) == ("assigned", "b")
    with pytest.raises(service.CannotTransfer):
        await transfer(desk, chat, to_agent="b")


async def test_to_a_queue_offers_it_to_someone_else(desk: Desk) -> None:
    first = await desk.queue(["a"])
    second = await desk.queue(["a", "b"])
    await desk.status("a", "active")
    await desk.status("b", "active")
    [chat] = await desk.open(first)
    await desk.accept(chat, "a")
    await transfer(desk, chat, to_queue=second)
    assert (await desk.offers())[chat] == {"b"}
    assert (await desk.assignment(chat)).queue_id == second


async def test_an_offered_chat_moves_with_its_offers_taken_back(desk: Desk) -> None:
    queue = await desk.queue(["a"])
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    await desk.events()
    await transfer(desk, chat, to_agent="c")
    assert [(e["type"], e.get("reason")) for e in await desk.events()][:1] == [
        ("chat.offer_withdrawn", "transferred")
    ]
    assert await desk.offers() == {}


async def test_nowhere_for_a_completed_chat_or_an_unknown_queue(desk: Desk) -> None:
    queue = await desk.queue(["a"])
    await desk.status("a", "active")
    [chat] = await desk.open(queue)
    with pytest.raises(service.UnknownQueue):
        await transfer(desk, chat, to_queue="nowhere")
    await complete(desk, chat)
    with pytest.raises(service.CannotTransfer):
        await transfer(desk, chat, to_agent="b")
