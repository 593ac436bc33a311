"""The gateway serves the console at `/` beside its API, and what the console needs of the API."""

from __future__ import annotations

import httpx
import pytest

from tests.support.desk import setup_desk
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product

pytestmark = pytest.mark.e2e


async def test_the_console_is_served_at_the_root_and_the_api_is_untouched(
    product: Product,
) -> None:
    async with httpx.AsyncClient(base_url=product.gateway) as client:
        index = await client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert '<script type="module" src="/app.js">' in index.text
        assert "script-src" not in index.headers["content-security-policy"]  # 'self' only
        # A page of the console (a reload, a shared link) gets the same document.
        page = await client.get("/chats/some-chat-id")
        assert page.status_code == 200 and page.text == index.text
        module = await client.get("/vendor/preact.js")
        assert module.status_code == 200
        assert module.headers["content-type"].startswith("text/javascript")
        assert module.headers["cache-control"] == "no-cache" and module.headers["etag"]
        again = await client.get(
            "/vendor/preact.js", headers={"If-None-Match": module.headers["etag"]}
        )
        assert again.status_code == 304
        # A missing file is a 404, not the console; so is an unknown API path, as JSON.
        assert (await client.get("/missing.js")).status_code == 404
        unknown = await client.get("/api/no-such-thing")
        assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
        assert (await client.get("/api/me")).status_code == 401
        assert (await client.get("/api/openapi.json")).json()["info"]["title"] == "chatdesk gateway"
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/readyz")).status_code == 200


async def test_every_agent_reads_the_channels_names_and_nothing_else_of_them(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    response = await anna.http.get("/api/channels")
    assert response.status_code == 200
    mine = [c for c in response.json() if c["id"] == channel["id"]]
    assert mine == [
        {"id": channel["id"], "kind": "telegram", "name": "Support bot", "active": True}
    ]
    async with httpx.AsyncClient(base_url=product.gateway) as client:
        assert (await client.get("/api/channels")).status_code == 401
    await admin.close()
    await anna.close()
