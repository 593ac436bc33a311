"""The console's WebSocket: a reconnecting client resumes where it left off, with no duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import websockets

from tests.support.desk import Stream, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product

pytestmark = pytest.mark.e2e


async def resume(url: str, after: str, *, in_url: bool = False) -> list[dict[str, Any]]:
    """Connect, resume after `after` (sent as a message, or in the URL), and collect until the
    stream goes quiet."""
    events = []
    async with websockets.connect(f"{url}&resume_after={after}" if in_url else url) as ws:
        if not in_url:
            await ws.send(json.dumps({"resume_after": after}))
        with contextlib.suppress(TimeoutError):
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5)))
    return events


async def test_reconnect_with_resume_after_gets_exactly_what_was_missed(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with Stream(anna.ws_url()) as first:
        await anna.http.put("/api/me/status", json={"status": "active"})
        await post_update(product, channel["id"], telegram_update(1, "first", user_id=1))
        await first.wait_for("chat.offered")
    seen = list(first.events)
    last_id = seen[-1]["id"]

    # While disconnected: two more customers write.
    await post_update(product, channel["id"], telegram_update(2, "second", user_id=2))
    await post_update(product, channel["id"], telegram_update(3, "third", user_id=3))
    await eventually(lambda: anna.list_chats("new"), lambda chats: len(chats) == 3)

    missed = await resume(anna.ws_url(), last_id)
    assert [int(e["id"]) for e in missed] == sorted({int(e["id"]) for e in missed})
    assert all(int(e["id"]) > int(last_id) for e in missed)
    offered = {e["data"]["chat_id"] for e in missed if e["type"] == "chat.offered"}
    assert len(offered) == 2
    assert offered.isdisjoint({e["data"].get("chat_id") for e in seen})

    # Resuming from the start replays the whole log: what was seen, then what was missed.
    assert await resume(anna.ws_url(), "0") == seen + missed
    # `resume_after` in the URL (as the console does it) does the same, from the first frame.
    assert await resume(anna.ws_url(), last_id, in_url=True) == missed

    # A bad resume message gets an error frame, and the stream stays open.
    async with websockets.connect(anna.ws_url()) as ws:
        await ws.send("not json")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "error" and "resume_after" in error["data"]["detail"]

    # A bad token is refused.
    bad = anna.ws_url().replace(anna.token, "nope")
    async with websockets.connect(bad) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await admin.close()
    await anna.close()
