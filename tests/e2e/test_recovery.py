"""Nothing is lost: messages accepted by a webhook reach the agent across crashes and restarts.

Distributed mode only (the crashes are of separate service processes and of the broker).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import backends
from tests.support.desk import Stream, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product, running

pytestmark = pytest.mark.e2e


@pytest.fixture
async def own_product(servers: backends.Servers, tmp_path: Path) -> AsyncIterator[Product]:
    """A distributed product of its own: these tests break it."""
    database_url, amqp_url = await servers.fresh()
    async with running(
        "distributed", tmp_path, database_url=database_url, amqp_url=amqp_url
    ) as product:
        yield product


async def test_messages_survive_a_crashed_chat_service(
    own_product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(own_product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    own_product.kill("chat")
    texts = ["are you there?", "hello?", "order 7"]
    for n, text in enumerate(texts, start=1):
        response = await post_update(own_product, channel["id"], telegram_update(n, text))
        assert response.status_code == 200  # accepted while chat is down

    async with Stream(anna.ws_url()) as stream:
        own_product.start("chat")
        await own_product.wait_ready(("chat",))
        await stream.wait_for("chat.offered", timeout=30)
    chats = (await anna.http.get("/api/chats", params={"view": "new"})).json()
    assert len(chats) == 1
    messages = await eventually(  # the last messages may still be on their way
        lambda: anna.messages(chats[0]["id"]), lambda messages: len(messages) == len(texts)
    )
    assert sorted(m["text"] for m in messages) == sorted(texts)
    await admin.close()
    await anna.close()


async def test_everything_flows_again_after_the_broker_restarts(
    own_product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(own_product, fake_telegram)
    await anna.http.put("/api/me/status", json={"status": "active"})
    await asyncio.to_thread(_restart_rabbitmq)

    # Accepted while services are still reconnecting: kept in ingest's outbox until they are.
    response = await post_update(own_product, channel["id"], telegram_update(1, "after restart"))
    assert response.status_code == 200
    async with Stream(anna.ws_url()) as stream:
        offered = await stream.wait_for("chat.offered", timeout=60)
        chat_id = offered["data"]["chat_id"]
        await anna.http.post(f"/api/chats/{chat_id}/accept")
        sent = await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "back"})
        assert sent.status_code == 201
        await stream.wait_for(
            "chat.message_status_changed", timeout=30, message__delivery_status="sent"
        )
    await own_product.wait_ready()
    await admin.close()
    await anna.close()


def _restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True)
