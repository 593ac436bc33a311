"""Flows 1 and 4 of SPEC.md over Facebook Messenger: a signed webhook reaches the agent, the reply
goes out through the Send API, and Meta's receipts move it to delivered and read.

Runs against the product as started by `python -m services`, in both modes, with a fake Graph API.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.ingest.meta.signature import sign
from tests.support.desk import Stream, eventually
from tests.support.fake_facebook import NO_PROFILE, FakeFacebook
from tests.support.messenger import (
    FacebookPage,
    delivery_event,
    meta_bytes,
    new_psid,
    now_ms,
    post_webhook,
    read_event,
    setup_facebook_desk,
    text_event,
    webhook,
)
from tests.support.product import ADMIN_PASSWORD, Product

pytestmark = pytest.mark.e2e


async def test_facebook_message_reaches_agent_and_reply_is_delivered_then_read(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    assert channel["kind"] == "facebook" and channel["page_id"] == page.id
    assert channel["status"] == "ok"
    assert channel["webhook_path"] == f"/webhooks/facebook/{channel['id']}"
    psid = new_psid()
    fake_facebook.profiles[psid] = {
        "first_name": "Jürgen",
        "last_name": "Müller",
        "profile_pic": "https://platform-lookaside.fbsbx.com/platform/profilepic/?psid=1",
    }
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        first = webhook(page, text_event(page, psid, "Grüße! Wo ist meine Bestellung № 42?"))
        response = await post_webhook(product, channel["id"], first, page.app_secret)
        assert response.status_code == 200, response.text

        offered = await stream.wait_for("chat.offered")
        chat_id = offered["data"]["chat_id"]
        [chat] = await anna.list_chats("new")
        assert chat["id"] == chat_id and chat["contact_name"] == "Jürgen Müller"
        assert chat["platform"] == "facebook" and chat["channel_id"] == channel["id"]
        accepted = (await anna.http.post(f"/api/chats/{chat_id}/accept")).json()
        assert accepted["status"] == "active"

        sent = await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": "Let me check"})
        assert sent.status_code == 201, sent.text
        message_id = sent.json()["id"]
        [call] = await fake_facebook.wait_sent(1)
        assert call.path == "/v25.0/me/messages"
        assert call.params["access_token"] == page.token
        assert call.body == {
            "recipient": {"id": psid},
            "messaging_type": "RESPONSE",
            "message": {"text": "Let me check"},
        }
        await stream.wait_for(
            "chat.message_status_changed", message__id=message_id, message__delivery_status="sent"
        )

        # Meta's receipts: delivered (naming the mid), then read (by watermark only).
        mid = fake_facebook.last_message_id
        delivered = webhook(page, delivery_event(page, psid, now_ms(), [mid]))
        assert (await post_webhook(product, channel["id"], delivered, page.app_secret)).is_success
        await stream.wait_for(
            "chat.message_status_changed",
            message__id=message_id,
            message__delivery_status="delivered",
        )
        read = webhook(page, read_event(page, psid, now_ms()))
        assert (await post_webhook(product, channel["id"], read, page.app_secret)).is_success
        await stream.wait_for(
            "chat.message_status_changed", message__id=message_id, message__delivery_status="read"
        )

        # Meta redelivers the first webhook; the customer writes again: one new message.
        assert (await post_webhook(product, channel["id"], first, page.app_secret)).is_success
        again = webhook(page, text_event(page, psid, "Order 42"))
        assert (await post_webhook(product, channel["id"], again, page.app_secret)).is_success
        await stream.wait_for("chat.message_received", message__text="Order 42")

    messages = await anna.messages(chat_id)
    assert [(m["direction"], m["text"], m["delivery_status"]) for m in messages] == [
        ("in", "Grüße! Wo ist meine Bestellung № 42?", None),
        ("out", "Let me check", "read"),
        ("in", "Order 42", None),
    ]
    contact = (await anna.http.get(f"/api/contacts/{accepted['contact_id']}")).json()
    assert contact["name"] == "Jürgen Müller"
    assert contact["identities"][0]["platform"] == "facebook"
    assert contact["identities"][0]["external_user_id"] == psid

    log = product.log()
    for secret in (*page.credentials(), ADMIN_PASSWORD):
        assert secret not in log
    await admin.close()
    await anna.close()


async def test_meta_handshake_echoes_the_challenge_only_for_our_verify_token(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    path = f"/webhooks/facebook/{channel['id']}"
    async with httpx.AsyncClient(base_url=product.ingest) as client:
        ok = await client.get(
            path,
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": page.verify_token,
                "hub.challenge": "1158201444",
            },
        )
        assert ok.status_code == 200 and ok.text == "1158201444"
        assert ok.headers["content-type"].startswith("text/plain")

        wrong = await client.get(
            path,
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        )
        assert wrong.status_code == 403 and wrong.json()["detail"]
        not_subscribe = await client.get(
            path,
            params={"hub.mode": "x", "hub.verify_token": page.verify_token, "hub.challenge": "1"},
        )
        assert not_subscribe.status_code == 403
        assert (await client.get(path)).status_code == 403
        unknown = await client.get(
            "/webhooks/facebook/no-such-channel",
            params={"hub.mode": "subscribe", "hub.verify_token": page.verify_token},
        )
        assert unknown.status_code == 404
    assert page.verify_token not in product.log()
    await admin.close()
    await anna.close()


async def test_bad_signatures_and_malformed_bodies_are_refused_and_publish_nothing(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    await anna.http.put("/api/me/status", json={"status": "active"})
    psid = new_psid()
    body = webhook(page, text_event(page, psid, "sneaky"))

    wrong = await post_webhook(product, channel["id"], body, "another-apps-secret")
    assert wrong.status_code == 401 and "X-Hub-Signature-256" in wrong.json()["detail"]
    unsigned = await post_webhook(product, channel["id"], body, None)
    assert unsigned.status_code == 401
    # Signed, then altered on the way: the signature covers the bytes as sent.
    raw = meta_bytes(body)
    tampered = raw.replace(b"sneaky", b"SNEAKY")
    altered = await post_webhook(
        product, channel["id"], tampered, None, signature=sign(page.app_secret, raw)
    )
    assert altered.status_code == 401
    malformed = await post_webhook(product, channel["id"], b"{not json", page.app_secret)
    assert malformed.status_code == 400 and "JSON" in malformed.json()["detail"]
    not_webhook = await post_webhook(
        product, channel["id"], {"object": "page", "entry": [{"messaging": []}]}, page.app_secret
    )
    assert not_webhook.status_code == 400 and not_webhook.json()["detail"]["errors"]
    unknown = await post_webhook(product, "no-such-channel", body, page.app_secret)
    assert unknown.status_code == 404
    # Another Meta product posting to this app's webhook is acknowledged, not acted on.
    instagram = await post_webhook(
        product, channel["id"], {"object": "instagram", "entry": []}, page.app_secret
    )
    assert instagram.status_code == 200

    real = webhook(page, text_event(page, psid, "real one"))
    assert (await post_webhook(product, channel["id"], real, page.app_secret)).is_success
    await eventually(lambda: anna.list_chats("new"), bool)
    await asyncio.sleep(1)  # time enough for anything the refused webhooks might have started
    [chat] = await anna.list_chats("new")
    assert [m["text"] for m in await anna.messages(chat["id"])] == ["real one"]
    await admin.close()
    await anna.close()


async def test_a_batch_of_customers_and_a_customer_without_profile(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    await anna.http.put("/api/me/status", json={"status": "active"})
    known, unknown = new_psid(), new_psid()
    fake_facebook.profiles[known] = {"first_name": "Ann", "last_name": "Lee"}
    # `unknown` has no profile: the fake answers Meta's 100/2018218.
    body = {
        "object": "page",
        "entry": [
            {"id": page.id, "time": now_ms(), "messaging": [text_event(page, known, "first")]},
            {
                "id": page.id,
                "time": now_ms(),
                "messaging": [
                    text_event(page, unknown, "hello"),
                    text_event(page, known, "second"),
                ],
            },
        ],
    }
    assert (await post_webhook(product, channel["id"], body, page.app_secret)).is_success

    chats = await eventually(lambda: anna.list_chats("new"), lambda c: len(c) == 2)
    names = {c["contact_name"]: c["id"] for c in chats}
    assert set(names) == {"Ann Lee", f"Facebook user {unknown[-4:]}"}
    ann = await eventually(lambda: anna.messages(names["Ann Lee"]), lambda m: len(m) == 2)
    assert [m["text"] for m in ann] == ["first", "second"]
    assert NO_PROFILE.code == 100
    await admin.close()
    await anna.close()


async def test_channel_creation_checks_the_page_token(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    queue_id = channel["queue_id"]
    form = {
        "kind": "facebook",
        "name": "Another page",
        "queue_id": queue_id,
        "page_id": "123456789012345",
        "page_token": "EAAB-not-a-token-Meta-knows",
        "app_secret": "0123456789abcdef0123456789abcdef",
        "verify_token": "verify",
        "api_base": fake_facebook.api_base,
    }
    before = (await admin.http.get("/api/admin/channels")).json()

    invalid = await admin.http.post("/api/admin/channels", json=form)
    assert invalid.status_code == 422, invalid.text
    assert "Invalid OAuth access token" in invalid.json()["detail"]
    wrong_secret = await admin.http.post(
        "/api/admin/channels", json={**form, "page_token": page.token}
    )
    assert wrong_secret.status_code == 422
    assert "appsecret_proof" in wrong_secret.json()["detail"]
    other_page = await admin.http.post(
        "/api/admin/channels",
        json={**form, "page_token": page.token, "app_secret": page.app_secret},
    )
    assert other_page.status_code == 422 and page.id in other_page.json()["detail"]
    taken = await admin.http.post(
        "/api/admin/channels",
        json={**form, "page_id": page.id, "page_token": page.token, "app_secret": page.app_secret},
    )
    assert taken.status_code == 409 and channel["id"] in taken.json()["detail"]
    closed_port = await admin.http.post(
        "/api/admin/channels", json={**form, "api_base": "http://127.0.0.1:9/v25.0"}
    )
    assert closed_port.status_code == 502 and "could not be reached" in closed_port.json()["detail"]
    bad_form = await admin.http.post(
        "/api/admin/channels", json={**form, "page_id": "not-digits", "app_secret": "sec ret"}
    )
    assert bad_form.status_code == 422
    for response in (invalid, wrong_secret, other_page, taken, closed_port, bad_form):
        assert form["page_token"] not in response.text and page.token not in response.text
        assert form["app_secret"] not in response.text and page.app_secret not in response.text
    assert (await admin.http.get("/api/admin/channels")).json() == before
    await admin.close()
    await anna.close()


async def test_one_app_posts_all_its_pages_to_one_webhook(
    product: Product, fake_facebook: FakeFacebook
) -> None:
    """Meta has one webhook URL per app: entries of the app's other pages reach their channels,
    entries of a page no channel of this app serves are dropped."""
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    sibling = FacebookPage.new(app_secret=page.app_secret)
    admin2, boris, sibling_channel, _ = await setup_facebook_desk(
        product, fake_facebook, page=sibling
    )
    stranger = FacebookPage.new()  # another app's page, with a channel of its own
    admin3, carla, _, _ = await setup_facebook_desk(product, fake_facebook, page=stranger)
    for agent in (anna, boris, carla):
        await agent.http.put("/api/me/status", json={"status": "active"})

    body = {
        "object": "page",
        "entry": [
            {"id": p.id, "time": now_ms(), "messaging": [text_event(p, new_psid(), f"to {n}")]}
            for n, p in (("page", page), ("sibling", sibling), ("stranger", stranger))
        ],
    }
    assert (await post_webhook(product, channel["id"], body, page.app_secret)).is_success

    [mine] = await eventually(lambda: anna.list_chats("new"), bool)
    [theirs] = await eventually(lambda: boris.list_chats("new"), bool)
    assert (mine["channel_id"], theirs["channel_id"]) == (channel["id"], sibling_channel["id"])
    assert [m["text"] for m in await boris.messages(theirs["id"])] == ["to sibling"]
    await asyncio.sleep(1)
    assert await carla.list_chats("new") == []
    for console in (admin, admin2, admin3, anna, boris, carla):
        await console.close()
