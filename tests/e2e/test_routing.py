"""Routing as agents and supervisors see it through the public API and their consoles: offers
that lapse and move on, who may touch a chat, transfers, the reply and idle limits, queue
options, and a console gone for longer than the grace period."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.desk import (
    AGENT_PASSWORD,
    SECRET,
    Stream,
    eventually,
    new_bot_token,
    post_update,
    telegram_update,
)
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Console, Product, running


@dataclass
class Team:
    admin: Console
    agents: list[Console]
    queue: dict[str, Any]
    channel: dict[str, Any]


async def team(product: Product, fake: FakeTelegram, agents: int, **queue_options: Any) -> Team:
    """A queue of new agents (logged in, not yet active) fed by a new Telegram channel."""
    suffix = secrets.token_hex(4)
    admin = await Console.login(product, "admin", ADMIN_PASSWORD)
    accounts = []
    for i in range(agents):
        response = await admin.http.post(
            "/api/admin/agents",
            json={
                "username": f"agent{i}-{suffix}",
                "password": AGENT_PASSWORD,
                "display_name": f"Agent {i}",
            },
        )
        assert response.status_code == 201, response.text
        accounts.append(response.json())
    response = await admin.http.post(
        "/api/admin/queues",
        json={
            "name": f"Routing {suffix}",
            "agent_ids": [a["id"] for a in accounts],
            **queue_options,
        },
    )
    assert response.status_code == 201, response.text
    queue = response.json()
    response = await admin.http.post(
        "/api/admin/channels",
        json={
            "kind": "telegram",
            "name": "Support bot",
            "queue_id": queue["id"],
            "token": new_bot_token(),
            "secret": SECRET,
            "api_base": fake.url,
        },
    )
    assert response.status_code == 201, response.text
    consoles = [await Console.login(product, a["username"], AGENT_PASSWORD) for a in accounts]
    return Team(admin, consoles, queue, response.json())


async def accepted_chat(product: Product, desk: Team, stream: Stream, user_id: int) -> str:
    """A customer writes; the one agent of the desk goes active and accepts the chat."""
    [agent] = desk.agents
    await go_active(agent)
    await post_update(product, desk.channel["id"], telegram_update(1, "Hi", user_id=user_id))
    offered = await stream.wait_for("chat.offered")
    chat_id: str = offered["data"]["chat_id"]
    assert (await agent.http.post(f"/api/chats/{chat_id}/accept")).status_code == 200
    return chat_id


async def go_active(*agents: Console) -> None:
    for agent in agents:
        response = await agent.http.put("/api/me/status", json={"status": "active"})
        assert response.json()["status"] == "active"


async def test_an_offer_not_accepted_in_time_goes_to_the_next_agent(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(product, fake_telegram, 2, accept_timeout_s=5)
    anna, boris = desk.agents
    async with Stream(anna.ws_url()) as anna_sees, Stream(boris.ws_url()) as boris_sees:
        await go_active(anna)
        await post_update(product, desk.channel["id"], telegram_update(1, "Hello?", user_id=7))
        offered = await anna_sees.wait_for("chat.offered")
        chat_id = offered["data"]["chat_id"]
        [new] = await anna.list_chats("new")
        assert new["id"] == chat_id and new["offer_expires_at"] is not None
        await go_active(boris)

        # Anna does not accept within the 5 s: the chat leaves her New list for Boris's.
        await anna_sees.wait_for("chat.offer_expired", timeout=20, chat_id=chat_id)
        await boris_sees.wait_for("chat.offered", timeout=10, chat_id=chat_id)
        assert await anna.list_chats("new") == []
        late = await anna.http.post(f"/api/chats/{chat_id}/accept")
        assert late.status_code == 404, late.text  # not hers to see any more

        accepted = await boris.http.post(f"/api/chats/{chat_id}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "active"
        assert accepted.json()["agent_id"] == boris.me["id"]


async def test_only_the_owner_works_a_chat_and_supervisors_move_it(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(product, fake_telegram, 2)
    anna, boris = desk.agents
    await go_active(anna)
    await post_update(product, desk.channel["id"], telegram_update(1, "Hi", user_id=8))
    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    chat_id = chat["id"]
    assert (await anna.http.post(f"/api/chats/{chat_id}/accept")).status_code == 200

    # Boris sees nothing of Anna's chat, and can do nothing with it.
    assert (await boris.http.get(f"/api/chats/{chat_id}")).status_code == 404
    for method, path, body in [
        ("POST", "messages", {"text": "mine now"}),
        ("POST", "complete", None),
        ("POST", "accept", None),
        ("POST", "transfer", {"agent_id": boris.me["id"]}),
    ]:
        response = await boris.http.request(method, f"/api/chats/{chat_id}/{path}", json=body)
        assert response.status_code == 404, (path, response.text)
    # A supervisor sees it.
    assert (await desk.admin.http.get(f"/api/chats/{chat_id}")).status_code == 200

    # Anna hands it to Boris: it is his at once, and hers no more.
    async with Stream(boris.ws_url()) as boris_sees:
        moved = await anna.http.post(
            f"/api/chats/{chat_id}/transfer", json={"agent_id": boris.me["id"]}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["agent_id"] == boris.me["id"]
        event = await boris_sees.wait_for("chat.transferred", chat_id=chat_id)
        assert event["data"]["from_agent_id"] == anna.me["id"]
    assert [c["id"] for c in await boris.list_chats("active")] == [chat_id]
    assert await anna.list_chats("active") == []
    assert (await anna.http.get(f"/api/chats/{chat_id}")).status_code == 404
    reply = await boris.http.post(f"/api/chats/{chat_id}/messages", json={"text": "Boris here"})
    assert reply.status_code == 201, reply.text

    # A supervisor moves it back to the queue: offered to someone other than Boris.
    await go_active(boris)
    moved = await desk.admin.http.post(
        f"/api/chats/{chat_id}/actions/transfer", json={"queue_id": desk.queue["id"]}
    )
    assert moved.status_code == 200, moved.text
    [offered] = await eventually(lambda: anna.list_chats("new"), bool)
    assert offered["id"] == chat_id
    assert await boris.list_chats("new") == []

    # Where a chat cannot go, nothing moves.
    for body, code in [
        ({"agent_id": "nobody"}, 422),
        ({"queue_id": "nowhere"}, 422),
        ({}, 422),
        ({"agent_id": anna.me["id"], "queue_id": desk.queue["id"]}, 422),
    ]:
        response = await desk.admin.http.post(f"/api/chats/{chat_id}/transfer", json=body)
        assert response.status_code == code, (body, response.text)
        assert "detail" in response.json()
    assert [c["id"] for c in await anna.list_chats("new")] == [chat_id]


async def test_the_owner_is_told_when_an_answer_is_overdue(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(product, fake_telegram, 1, reply_timeout_s=5)
    [anna] = desk.agents
    async with Stream(anna.ws_url()) as anna_sees:
        chat_id = await accepted_chat(product, desk, anna_sees, user_id=9)
        [active] = await anna.list_chats("active")
        assert active["reply_due_at"] is not None
        overdue = await anna_sees.wait_for("chat.reply_overdue", timeout=20, chat_id=chat_id)
        assert overdue["data"]["reoffered"] is False
    assert [c["id"] for c in await anna.list_chats("active")] == [chat_id]  # still hers


async def test_a_chat_whose_customer_goes_quiet_is_completed_and_the_next_message_opens_another(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(product, fake_telegram, 1, auto_complete_after_s=5)
    [anna] = desk.agents
    async with Stream(anna.ws_url()) as anna_sees:
        chat_id = await accepted_chat(product, desk, anna_sees, user_id=10)
        await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "How can I help?"})
        completed = await anna_sees.wait_for("chat.completed", timeout=25, chat_id=chat_id)
        assert completed["data"]["completed_by"] is None

        await post_update(product, desk.channel["id"], telegram_update(2, "One more", user_id=10))

        async def offers() -> list[str]:
            return [e["data"]["chat_id"] for e in anna_sees.events if e["type"] == "chat.offered"]

        assert len(set(await eventually(offers, lambda o: len(o) == 2))) == 2  # a new chat
    chat = (await anna.http.get(f"/api/chats/{chat_id}")).json()
    assert chat["status"] == "completed"


async def test_queue_options_are_checked_as_a_whole(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(product, fake_telegram, 1)
    path = f"/api/admin/queues/{desk.queue['id']}"
    for body in [
        {"max_wait_s": 60},  # without on_max_wait
        {"max_wait_s": 60, "on_max_wait": "move"},  # without an overflow queue
        {"max_wait_s": 60, "on_max_wait": "move", "overflow_queue_id": "nowhere"},
        {"routing_rule": "fastest"},
        {"capacity": 0},
        {"accept_timeout_s": 1},
        {"agent_ids": ["nobody"]},
        {"colour": "blue"},
    ]:
        response = await desk.admin.http.patch(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"], body
    [queue] = [
        q
        for q in (await desk.admin.http.get("/api/admin/queues")).json()
        if q["id"] == desk.queue["id"]
    ]
    assert queue == desk.queue  # nothing changed

    changed = await desk.admin.http.patch(
        path,
        json={
            "routing_rule": "round_robin",
            "capacity": 2,
            "max_wait_s": 600,
            "on_max_wait": "complete",
        },
    )
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in ("routing_rule", "capacity", "max_wait_s")} == {
        "routing_rule": "round_robin",
        "capacity": 2,
        "max_wait_s": 600,
    }
    agent = desk.agents[0]
    assert (await agent.http.patch(path, json={"capacity": 3})).status_code == 403
    missing = await desk.admin.http.patch("/api/admin/queues/nowhere", json={"capacity": 3})
    assert missing.status_code == 404


@pytest.fixture
async def impatient_product(tmp_path: Path) -> AsyncIterator[Product]:
    """Embedded, with a 1.5 s disconnect grace and a fast routing clock."""
    env = {"CHATDESK_PRESENCE_GRACE_S": "1.5", "CHATDESK_ROUTING_TICK_S": "0.2"}
    async with running("embedded", tmp_path, extra_env=env) as product:
        yield product


async def test_an_agent_whose_console_is_gone_past_the_grace_is_logged_out(
    impatient_product: Product, fake_telegram: FakeTelegram
) -> None:
    desk = await team(impatient_product, fake_telegram, 1)
    [anna] = desk.agents

    async def status() -> str:
        return str((await anna.http.get("/api/me")).json()["status"])

    async with Stream(anna.ws_url()):
        await go_active(anna)
        # The console stays: the grace passes twice over, the status holds.
        await asyncio.sleep(3)
        assert await status() == "active"
    # The console is gone: after the grace, Anna is inactive, like after a logout.
    assert await eventually(status, lambda s: s == "inactive", timeout=10) == "inactive"
    # It comes back: so does her status.
    async with Stream(anna.ws_url()) as anna_sees:
        back = await anna_sees.wait_for("agent.status_changed", status="active")
        assert back["data"]["reason"] == "reconnected"
    assert await status() == "active"
