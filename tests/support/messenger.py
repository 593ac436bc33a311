"""A Facebook page on the desk, and what Meta posts to its webhook (signed, escaped as Meta does).

Shapes as in Meta's webhook reference (and `tests/ingest/fixtures/messenger/`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from services.ingest.meta.signature import sign
from tests.support.desk import AGENT_PASSWORD, agent_and_queue
from tests.support.fake_facebook import FakeFacebook
from tests.support.product import Console, Product


@dataclass(frozen=True)
class FacebookPage:
    """A page's credentials, as its admin would paste them into the channel form."""

    id: str
    token: str
    app_secret: str
    verify_token: str

    @classmethod
    def new(cls, app_secret: str | None = None) -> FacebookPage:
        """A new page, of a new Meta app unless `app_secret` names the app."""
        return cls(
            id=str(100_000_000_000_000 + secrets.randbelow(10**14)),
            token="EAAB" + secrets.token_urlsafe(48),
            app_secret=app_secret or secrets.token_hex(16),
            verify_token="verify-" + secrets.token_urlsafe(12),
        )

    def credentials(self) -> tuple[str, ...]:
        return self.token, self.app_secret, self.verify_token


def now_ms() -> int:
    return int(time.time() * 1000)


def new_psid() -> str:
    return str(7_000_000_000_000_000 + secrets.randbelow(10**15))


def text_event(
    page: FacebookPage, psid: str, text: str, *, mid: str | None = None, at_ms: int | None = None
) -> dict[str, Any]:
    return {
        "sender": {"id": psid},
        "recipient": {"id": page.id},
        "timestamp": at_ms or now_ms(),
        "message": {"mid": mid or "m_" + secrets.token_urlsafe(32), "text": text},
    }


def delivery_event(
    page: FacebookPage, psid: str, watermark_ms: int, mids: list[str] | None = None
) -> dict[str, Any]:
    delivery: dict[str, Any] = {"watermark": watermark_ms}
    if mids is not None:
        delivery["mids"] = mids
    return {"sender": {"id": psid}, "recipient": {"id": page.id}, "delivery": delivery}


def read_event(page: FacebookPage, psid: str, watermark_ms: int) -> dict[str, Any]:
    return {
        "sender": {"id": psid},
        "recipient": {"id": page.id},
        "timestamp": now_ms(),
        "read": {"watermark": watermark_ms},
    }


def webhook(page: FacebookPage, *events: dict[str, Any]) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": page.id, "time": now_ms(), "messaging": [*events]}]}


def meta_bytes(body: dict[str, Any]) -> bytes:
    """The body as Meta writes it: compact, non-ASCII as \\uXXXX, slashes as \\/."""
    return json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode()


async def post_webhook(
    product: Product,
    channel_id: str,
    body: dict[str, Any] | bytes,
    app_secret: str | None,
    *,
    signature: str | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else meta_bytes(body)
    headers = {"Content-Type": "application/json"}
    if signature is not None or app_secret is not None:
        headers["X-Hub-Signature-256"] = signature or sign(app_secret or "", raw)
    async with httpx.AsyncClient(base_url=product.ingest) as client:
        return await client.post(f"/webhooks/facebook/{channel_id}", content=raw, headers=headers)


async def setup_facebook_desk(
    product: Product,
    fake: FakeFacebook,
    *,
    human_agent_tag: bool = False,
    page: FacebookPage | None = None,
) -> tuple[Console, Console, dict[str, Any], FacebookPage]:
    """A new agent and queue, and a Facebook channel of a (new) page on the fake Graph API."""
    admin, agent, queue = await agent_and_queue(product)
    page = page or FacebookPage.new()
    fake.add_page(page.token, page.id, "Support page", page.app_secret)
    response = await admin.http.post(
        "/api/admin/channels",
        json={
            "kind": "facebook",
            "name": "Support page",
            "queue_id": queue["id"],
            "page_id": page.id,
            "page_token": page.token,
            "app_secret": page.app_secret,
            "verify_token": page.verify_token,
            "human_agent_tag": human_agent_tag,
            "api_base": fake.api_base,
        },
    )
    assert response.status_code == 201, response.text
    for secret in page.credentials():
        assert secret not in response.text
    anna = await Console.login(product, agent["username"], AGENT_PASSWORD)
    return admin, anna, response.json(), page
