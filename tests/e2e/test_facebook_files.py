"""Files and pictures over Facebook Messenger, end to end: attachments fetched from the URLs the
webhook gave (the fake Graph API plays Meta's CDN), the customer's `profile_pic` kept, and an
agent's file uploaded through the Send API (multipart `filedata`).

Runs in both modes, with a fake Graph API.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest

from tests.e2e.test_files import Seen, send_file, settled
from tests.support.desk import Stream, eventually
from tests.support.fake_facebook import FakeFacebook
from tests.support.messenger import (
    FacebookPage,
    new_psid,
    now_ms,
    post_webhook,
    setup_facebook_desk,
    text_event,
    webhook,
)
from tests.support.product import Product

pytestmark = pytest.mark.e2e

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(30_000) + b"\xff\xd9"
PICTURE = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(9_000) + b"\xff\xd9"
PDF = b"%PDF-1.7\n" + os.urandom(20_000) + b"\n%%EOF\n"


def media_event(page: FacebookPage, psid: str, *attachments: tuple[str, str]) -> dict[str, Any]:
    """A customer's message with attachments, each (Messenger type, URL)."""
    return {
        "sender": {"id": psid},
        "recipient": {"id": page.id},
        "timestamp": now_ms(),
        "message": {
            "mid": "m_" + secrets.token_urlsafe(32),
            "attachments": [{"type": t, "payload": {"url": url}} for t, url in attachments],
        },
    }


async def test_facebook_files_in_and_out(product: Product, fake_facebook: FakeFacebook) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    seen = Seen()
    seen.watch(anna)
    psid = new_psid()
    fake_facebook.profiles[psid] = {
        "first_name": "Lena",
        "last_name": "Kovač",
        "profile_pic": fake_facebook.host(PICTURE, "image/jpeg", "profile.jpg"),
    }
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        hello = webhook(page, text_event(page, psid, "Hello"))
        assert (await post_webhook(product, channel["id"], hello, page.app_secret)).is_success
        chat_id = (await stream.wait_for("chat.offered"))["data"]["chat_id"]
        await anna.http.post(f"/api/chats/{chat_id}/accept")

        files = media_event(
            page,
            psid,
            ("image", fake_facebook.host(JPEG, "image/jpeg", "photo.jpg")),
            ("file", fake_facebook.host(PDF, "application/pdf", "Invoice_42.pdf")),
            ("image", fake_facebook.expired_url("gone.jpg")),
        )
        response = await post_webhook(product, channel["id"], webhook(page, files), page.app_secret)
        assert response.status_code == 200
        messages = await eventually(lambda: anna.messages(chat_id), settled(3))

        photo, invoice, gone = messages[-1]["attachments"]
        assert (photo["kind"], photo["state"], photo["mime_type"]) == (
            "photo",
            "stored",
            "image/jpeg",
        )
        assert photo["name"].endswith("photo.jpg") and photo["size"] == len(JPEG)
        assert (invoice["kind"], invoice["state"]) == ("document", "stored")
        assert invoice["name"].endswith("Invoice_42.pdf")
        assert gone["state"] == "failed" and "expired" in gone["error"]
        got = await anna.http.get(f"/api/files/{photo['id']}")
        assert got.status_code == 200 and got.content == JPEG
        got = await anna.http.get(f"/api/files/{invoice['id']}")
        assert got.content == PDF and got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith("attachment;")

        # The agent's file goes up with the message; the caption follows as text.
        sent = await send_file(anna, chat_id, ("offer.pdf", PDF, "application/pdf"), "Our offer")
        assert sent.status_code == 201, sent.text
        upload, caption = await fake_facebook.wait_sent(2)
        assert upload.params["access_token"] == page.token
        assert upload.upload is not None and upload.upload.data == PDF
        assert upload.upload.filename == "offer.pdf"
        assert upload.upload.content_type == "application/pdf"
        assert upload.body == {
            "recipient": {"id": psid},
            "messaging_type": "RESPONSE",
            "message": {"attachment": {"type": "file", "payload": {"is_reusable": True}}},
        }
        assert caption.body is not None and caption.body["message"] == {"text": "Our offer"}
        await stream.wait_for(
            "chat.message_status_changed",
            message__id=sent.json()["id"],
            message__delivery_status="sent",
        )
        image = await send_file(anna, chat_id, ("look.jpg", JPEG, "image/jpeg"))
        [*_, call] = await fake_facebook.wait_sent(3)
        assert call.body is not None and call.body["message"]["attachment"]["type"] == "image"
        assert call.upload is not None and call.upload.data == JPEG
        await stream.wait_for(
            "chat.message_status_changed",
            message__id=image.json()["id"],
            message__delivery_status="sent",
        )
        seen.frames(stream)

    # The customer's picture, from profile_pic.
    contact_id = (await anna.http.get(f"/api/chats/{chat_id}")).json()["contact_id"]

    async def contact() -> dict[str, Any]:
        body: dict[str, Any] = (await anna.http.get(f"/api/contacts/{contact_id}")).json()
        return body

    found = await eventually(contact, lambda c: c["picture_url"] is not None)
    assert found["name"] == "Lena Kovač"
    picture = await anna.http.get(found["picture_url"])
    assert picture.status_code == 200 and picture.content == PICTURE

    # Meta's CDN was asked for the files as they are: never with the page token.
    assert len(fake_facebook.cdn_calls) == 4
    assert all("access_token" not in query for _, query in fake_facebook.cdn_calls)
    seen.assert_free_of(*page.credentials())
    for secret in page.credentials():
        assert secret not in product.log()
    await admin.close()
    await anna.close()
