"""Long polling end to end: without CHATDESK_PUBLIC_BASE_URL, ingest reads each Telegram
channel with getUpdates; a message reaches the agent once, and again once after a restart of
ingest (the offset is kept); a deactivated channel is not read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.support import backends
from tests.support.desk import eventually, new_bot_token, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["embedded", "distributed"])
async def polling_product(
    request: pytest.FixtureRequest,
    servers: backends.Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Product]:
    """The product without a public URL (as on a laptop): it long-polls. Its own, as the
    tests restart ingest."""
    urls = await servers.fresh() if request.param == "distributed" else (None, None)
    async with running(
        request.param,
        tmp_path_factory.mktemp(f"polling-{request.param}"),
        database_url=urls[0],
        amqp_url=urls[1],
        webhooks=False,
    ) as product:
        yield product


def ingest_unit(product: Product) -> str:
    return "ingest" if product.mode == "distributed" else "all"


async def test_polled_messages_reach_the_agent_once_across_a_restart(
    polling_product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, anna, channel = await setup_desk(polling_product, fake_telegram, token=token)
    assert fake_telegram.sent("setWebhook") == []
    await fake_telegram.wait_sent(1, "deleteWebhook")  # getUpdates works only without one
    [poll] = (await fake_telegram.wait_sent(1, "getUpdates"))[:1]
    assert poll.token == token
    assert json.loads(poll.params["allowed_updates"]) == ["message", "edited_message"]
    await anna.http.put("/api/me/status", json={"status": "active"})

    fake_telegram.push(token, telegram_update(500, "polled hello", user_id=4242))
    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    assert chat["channel_id"] == channel["id"]
    await eventually(lambda: anna.messages(chat["id"]), lambda ms: len(ms) == 1)
    # Confirmed to Telegram (the next getUpdates asks from 501) only once committed.
    await eventually(lambda: _offsets(fake_telegram, token), lambda offsets: "501" in offsets)

    await polling_product.restart(ingest_unit(polling_product))
    restarted_at = len(fake_telegram.calls)
    fake_telegram.push(token, telegram_update(501, "after the restart", user_id=4242))
    messages = await eventually(lambda: anna.messages(chat["id"]), lambda ms: len(ms) == 2)
    assert [m["text"] for m in messages] == ["polled hello", "after the restart"]
    # The restarted ingest went on from the kept offset: update 500 was not asked for again.
    after = [c for c in fake_telegram.calls[restarted_at:] if c.method == "getUpdates"]
    assert after and all(int(c.params.get("offset") or 0) >= 501 for c in after)
    await asyncio.sleep(1.5)  # time for a repeat to show, if there were one
    assert len(await anna.messages(chat["id"])) == 2
    assert len(await anna.list_chats("new")) == 1
    assert token not in polling_product.log()  # aiogram's URLs carry it
    await admin.close()
    await anna.close()


async def test_a_deactivated_channel_is_not_polled(
    polling_product: Product, fake_telegram: FakeTelegram
) -> None:
    token = new_bot_token()
    admin, anna, channel = await setup_desk(polling_product, fake_telegram, token=token)
    await fake_telegram.wait_sent(1, "getUpdates")
    await anna.http.put("/api/me/status", json={"status": "active"})

    off = await admin.http.patch(f"/api/admin/channels/{channel['id']}", json={"active": False})
    assert off.status_code == 200
    await asyncio.sleep(1.5)  # a getUpdates under way when it stopped ends within a second
    polled = len(fake_telegram.sent("getUpdates"))
    fake_telegram.push(token, telegram_update(1, "while it was off", user_id=4343))
    await asyncio.sleep(1.5)
    assert len(fake_telegram.sent("getUpdates")) == polled
    assert await anna.list_chats("new") == []

    # Telegram kept what came meanwhile: reactivated, the channel reads it.
    on = await admin.http.patch(f"/api/admin/channels/{channel['id']}", json={"active": True})
    assert on.status_code == 200
    [chat] = await eventually(lambda: anna.list_chats("new"), bool)
    messages = await anna.messages(chat["id"])
    assert [m["text"] for m in messages] == ["while it was off"]
    await admin.close()
    await anna.close()


async def _offsets(fake: FakeTelegram, token: str) -> list[str]:
    return [c.params.get("offset", "") for c in fake.sent("getUpdates") if c.token == token]
