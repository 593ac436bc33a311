"""Files and pictures over Telegram, end to end: a customer's files are downloaded after the
webhook, stored, and served to whoever may see the chat; the contact gets its profile picture;
an agent's file reaches the customer; size limits and Telegram's refusals are shown as such.

Runs against the product as started by `python -m services`, in both modes (files in a
directory when embedded, in PostgreSQL's `blobs` schema when distributed). The product runs
with `CHATDESK_MAX_FILE_MB=1` (tests/support/product.py).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.desk import (
    AGENT_PASSWORD,
    SECRET,
    Stream,
    eventually,
    new_bot_token,
    post_update,
    setup_desk,
    telegram_update,
)
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(40_000) + b"\xff\xd9"
THUMB = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(900) + b"\xff\xd9"
PICTURE = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(20_000) + b"\xff\xd9"
PDF = b"%PDF-1.7\n" + os.urandom(30_000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(25_000)


class Seen:
    """Everything the console was shown: API answers (JSON and headers) and WebSocket frames,
    to look for secrets in."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def watch(self, console: Console) -> None:
        async def record(response: httpx.Response) -> None:
            await response.aread()
            self.texts.append(f"{response.url} {dict(response.headers)}")
            if "json" in response.headers.get("content-type", ""):
                self.texts.append(response.text)

        console.http.event_hooks["response"].append(record)

    def frames(self, stream: Stream) -> None:
        self.texts.extend(json.dumps(event) for event in stream.events)

    def assert_free_of(self, *secrets_: str) -> None:
        everything = "\n".join(self.texts)
        assert everything, "nothing was recorded"
        for secret in secrets_:
            assert secret not in everything


def media_update(update_id: int, user_id: int, **content: Any) -> dict[str, Any]:
    """A Telegram update whose message carries media (`photo`, `document`, `caption`, ...)."""
    update = telegram_update(update_id, "", user_id=user_id)
    del update["message"]["text"]
    update["message"].update(content)
    return update


def document(fake: FakeTelegram, data: bytes, name: str, mime: str, size: int | None = None) -> Any:
    extension = name.rsplit(".", 1)[-1]
    file_id = fake.add_file(data, "documents", extension, size=size)
    return {
        "file_name": name,
        "mime_type": mime,
        "file_id": file_id,
        "file_unique_id": fake.files[file_id].unique_id,
        "file_size": fake.files[file_id].size,
    }


def settled(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    """Whether the messages hold `count` files, none of them pending any more."""

    def ready(messages: list[dict[str, Any]]) -> bool:
        files = [a for m in messages for a in m["attachments"]]
        return len(files) == count and all(a["state"] != "pending" for a in files)

    return ready


async def test_customer_files_are_stored_and_served_to_whoever_may_see_the_chat(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    bot_token = new_bot_token()
    admin, anna, channel = await setup_desk(product, fake_telegram, token=bot_token)
    seen = Seen()
    for console in (admin, anna):
        seen.watch(console)
    user = 600_000 + secrets.randbelow(100_000)
    fake_telegram.add_profile_photo(user, (THUMB, 160, 160), (PICTURE, 640, 640))
    photo = fake_telegram.photo_sizes((THUMB, 90, 67), (JPEG, 1280, 960))
    pdf = document(fake_telegram, PDF, "Счёт № 42.pdf", "application/pdf")
    film = document(fake_telegram, b"not really", "unboxing.mp4", "video/mp4", size=25 * MB)

    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        await post_update(product, channel["id"], telegram_update(1, "Hi", user_id=user))
        chat_id = (await stream.wait_for("chat.offered"))["data"]["chat_id"]

        # Telegram is slow to give the photo: the message shows first, its file pending.
        fake_telegram.delays["getFile"] = 2.0
        answered = time.monotonic()
        response = await post_update(
            product, channel["id"], media_update(2, user, photo=photo, caption="Broken!")
        )
        assert response.status_code == 200
        assert time.monotonic() - answered < 1.5  # the webhook did not wait for the download
        received = await stream.wait_for("chat.message_received", message__text="Broken!")
        assert received["data"]["message"]["attachments"][0]["state"] == "pending"
        updated = await stream.wait_for(
            "chat.message_updated", message__attachments__0__state="stored"
        )
        fake_telegram.delays.clear()
        [stored] = updated["data"]["message"]["attachments"]
        assert stored["kind"] == "photo" and stored["size"] == len(JPEG)
        assert stored["mime_type"] == "image/jpeg" and stored["name"]

        await post_update(product, channel["id"], media_update(3, user, document=pdf))
        await post_update(product, channel["id"], media_update(4, user, document=film))
        messages = await eventually(lambda: anna.messages(chat_id), settled(3))
        seen.frames(stream)

    by_name = {a["name"]: a for m in messages for a in m["attachments"]}
    assert by_name["Счёт № 42.pdf"]["state"] == "stored"
    too_big = by_name["unboxing.mp4"]
    assert too_big["state"] == "too_large" and too_big["size"] == 25 * MB
    assert "20 MB" in too_big["error"]
    assert all(a["platform_file_id"] is None for a in by_name.values())
    # The largest size of the photo only, and nothing of the 25 MB file, were downloaded.
    fetched = {path for _, path in fake_telegram.downloads}
    assert fake_telegram.files[photo[0]["file_id"]].path not in fetched
    assert fake_telegram.files[film["file_id"]].path not in fetched
    assert {token for token, _ in fake_telegram.downloads} == {bot_token}

    # The agent downloads the exact bytes, named.
    got = await anna.http.get(f"/api/files/{stored['id']}")
    assert got.status_code == 200 and got.content == JPEG
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["content-disposition"].startswith("inline; filename=")
    assert got.headers["x-content-type-options"] == "nosniff"
    got = await anna.http.get(f"/api/files/{by_name['Счёт № 42.pdf']['id']}")
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"____ _ 42.pdf\"; filename*=UTF-8''%D0%A1%D1%87%D1%91%D1%82"
        "%20%E2%84%96%2042.pdf"
    )
    not_here = await anna.http.get(f"/api/files/{too_big['id']}")
    assert not_here.status_code == 409 and "too_large" in not_here.json()["detail"]
    assert (await anna.http.get("/api/files/no-such-file")).status_code == 404

    # The contact's picture: the largest size of their newest profile photo.
    contact_id = (await anna.http.get(f"/api/chats/{chat_id}")).json()["contact_id"]
    contact = await eventually(
        lambda: _json(anna.http.get(f"/api/contacts/{contact_id}")),
        lambda c: c.get("picture_url") is not None,
    )
    assert contact["picture_url"] == f"/api/contacts/{contact_id}/picture"
    assert "picture" not in contact
    picture = await anna.http.get(contact["picture_url"])
    assert picture.status_code == 200 and picture.content == PICTURE
    assert picture.headers["content-type"] == "image/jpeg"

    # Another agent learns nothing of them; a supervisor sees them.
    boris = await other_agent(product, admin)
    seen.watch(boris)
    for path in (
        f"/api/files/{stored['id']}",
        f"/api/files/{too_big['id']}",
        f"/api/contacts/{contact_id}",
        f"/api/contacts/{contact_id}/picture",
    ):
        refused = await boris.http.get(path)
        assert refused.status_code == 404, path
        assert refused.json()["detail"]
    assert (await admin.http.get(f"/api/files/{stored['id']}")).content == JPEG
    assert (await admin.http.get(f"/api/contacts/{contact_id}/picture")).content == PICTURE
    assert (
        await boris.http.get(f"/api/files/{stored['id']}", headers={"Authorization": ""})
    ).status_code == 401

    seen.assert_free_of(bot_token, SECRET)
    assert bot_token not in product.log()
    for console in (admin, anna, boris):
        await console.close()


async def test_a_customer_without_a_visible_picture_has_none(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    user = 700_000 + secrets.randbelow(100_000)  # no profile photos
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        await post_update(product, channel["id"], telegram_update(1, "Hello", user_id=user))
        chat_id = (await stream.wait_for("chat.offered"))["data"]["chat_id"]
    contact_id = (await anna.http.get(f"/api/chats/{chat_id}")).json()["contact_id"]

    async def asked() -> list[str]:
        return [c.params["user_id"] for c in fake_telegram.sent("getUserProfilePhotos")]

    await eventually(asked, lambda users: str(user) in users)
    contact = (await anna.http.get(f"/api/contacts/{contact_id}")).json()
    assert contact["name"] == "Ivan Petrov" and contact["picture_url"] is None
    missing = await anna.http.get(f"/api/contacts/{contact_id}/picture")
    assert missing.status_code == 404 and missing.json()["detail"] == "the contact has no picture"
    await admin.close()
    await anna.close()


async def test_agent_files_reach_the_customer_and_refusals_show(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    bot_token = new_bot_token()
    admin, anna, channel = await setup_desk(product, fake_telegram, token=bot_token)
    seen = Seen()
    seen.watch(anna)
    user = 800_000 + secrets.randbelow(100_000)
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        await post_update(product, channel["id"], telegram_update(1, "Send it", user_id=user))
        chat_id = (await stream.wait_for("chat.offered"))["data"]["chat_id"]

        # Before accepting, the file is refused, and nothing is stored or sent.
        early = await send_file(anna, chat_id, ("a.pdf", PDF, "application/pdf"))
        assert early.status_code == 409
        await anna.http.post(f"/api/chats/{chat_id}/accept")

        # A picture with a caption goes as sendPhoto, the caption with it.
        sent = await send_file(anna, chat_id, ("Схема.png", PNG, "image/png"), "The diagram")
        assert sent.status_code == 201, sent.text
        message = sent.json()
        assert message["text"] == "The diagram" and message["delivery_status"] == "pending"
        [attachment] = message["attachments"]
        assert attachment["kind"] == "photo" and attachment["state"] == "stored"
        assert (attachment["name"], attachment["size"]) == ("Схема.png", len(PNG))
        [call] = await fake_telegram.wait_sent(1, "sendPhoto")
        assert call.token == bot_token and call.params["chat_id"] == str(user)
        assert call.params["photo"].data == PNG and call.params["caption"] == "The diagram"
        await stream.wait_for(
            "chat.message_status_changed",
            message__id=message["id"],
            message__delivery_status="sent",
        )
        mine = await anna.http.get(f"/api/files/{attachment['id']}")
        assert mine.status_code == 200 and mine.content == PNG

        # A document without a caption goes as sendDocument, with its name.
        sent = await send_file(anna, chat_id, ("contract.pdf", PDF, "application/pdf"))
        assert sent.status_code == 201
        [call] = await fake_telegram.wait_sent(1, "sendDocument")
        assert call.params["document"].data == PDF
        assert call.params["document"].filename == "contract.pdf"
        assert "caption" not in call.params
        await stream.wait_for(
            "chat.message_status_changed",
            message__id=sent.json()["id"],
            message__delivery_status="sent",
        )

        # Telegram refuses the upload as too large: failed, saying so.
        fake_telegram.errors["sendDocument"] = [(413, "Request Entity Too Large")]
        refused = (await send_file(anna, chat_id, ("big.pdf", PDF, "application/pdf"))).json()
        event = await stream.wait_for("chat.message_status_changed", message__id=refused["id"])
        assert event["data"]["message"]["delivery_status"] == "failed"
        assert "too large for Telegram" in event["data"]["message"]["delivery_error"]
        assert len(fake_telegram.sent("sendDocument")) == 2  # no retry of a refused file

        # A text longer than Telegram's 4096 characters goes in parts.
        text = " ".join(f"word{i:05d}" for i in range(1000))  # 9999 characters
        long = (await anna.http.post(f"/api/chats/{chat_id}/messages", json={"text": text})).json()
        await stream.wait_for(
            "chat.message_status_changed", message__id=long["id"], message__delivery_status="sent"
        )
        parts = [c.params["text"] for c in fake_telegram.sent() if c.params["chat_id"] == str(user)]
        assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
        assert " ".join(parts) == text
        seen.frames(stream)

    before = await anna.messages(chat_id)
    # Over the limit (1 MB here): refused from its Content-Length, or from what arrived.
    for size in (MB + 200_000, MB + 10):
        over = await send_file(anna, chat_id, ("huge.bin", os.urandom(size), "application/zip"))
        assert over.status_code == 413 and "1 MB" in over.json()["detail"]
    # Malformed: no file part, an empty file, an unsupported body.
    no_file = await anna.http.post(
        f"/api/chats/{chat_id}/messages", data={"caption": "x"}, files={"other": ("a", b"a")}
    )
    assert no_file.status_code == 422 and "file" in no_file.json()["detail"]
    empty = await send_file(anna, chat_id, ("empty.txt", b"", "text/plain"))
    assert empty.status_code == 422 and empty.json()["detail"] == "the file is empty"
    plain = await anna.http.post(f"/api/chats/{chat_id}/messages", content=b"hello")
    assert plain.status_code == 415 and plain.json()["detail"]
    # Someone else's chat.
    boris = await other_agent(product, admin)
    theirs = await send_file(boris, chat_id, ("a.pdf", PDF, "application/pdf"))
    assert theirs.status_code == 404
    assert await anna.messages(chat_id) == before

    seen.assert_free_of(bot_token, SECRET)
    for console in (admin, anna, boris):
        await console.close()


async def send_file(
    console: Console, chat_id: str, file: tuple[str, bytes, str], caption: str | None = None
) -> httpx.Response:
    return await console.http.post(
        f"/api/chats/{chat_id}/messages",
        files={"file": file},
        data={"caption": caption} if caption else None,
    )


async def other_agent(product: Product, admin: Console) -> Console:
    """An agent in no queue of the test's."""
    name = f"boris-{secrets.token_hex(4)}"
    await admin.http.post(
        "/api/admin/agents",
        json={"username": name, "password": AGENT_PASSWORD, "display_name": "Boris"},
    )
    return await Console.login(product, name, AGENT_PASSWORD)


async def _json(request: Any) -> dict[str, Any]:
    response = await request
    body: dict[str, Any] = response.json()
    return body
