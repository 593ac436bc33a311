"""Flow 6 of SPEC.md end to end: a new chat's duplicate search reaches the agent's console, the
agent merges, and the survivor takes the merged contact's identities, chats and cases; the
contact's timeline, details and duplicate rules, with who may do what.

Runs against the product as started by `python -m services`, in both modes.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aio_pika
import pytest

from tests.support.desk import Stream, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e

SYLLABLES = ("ka", "lo", "mi", "ra", "to", "ve", "zu", "ni", "sha", "bo", "de", "gu", "pe", "ry")


def surname() -> str:
    """A surname no other test uses: the product (and its contacts) is shared."""
    return "".join(random.choice(SYLLABLES) for _ in range(5)).capitalize() + "ov"


async def get(console: Console, path: str, **params: Any) -> Any:
    response = await console.http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_duplicates_reach_the_console_and_the_agent_merges_them(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    family = surname()
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        # One customer, two Telegram accounts, the name written two ways.
        update = telegram_update(
            1, "Hi, order 12", user_id=101, first_name="Ivan", last_name=family
        )
        await post_update(product, channel["id"], update)
        first = await stream.wait_for("contact.duplicates_found")
        # It reaches the agent holding the chat, whether or not contacts knew who that was.
        assert first["data"]["count"] == 0
        chat1, a = first["data"]["chat_id"], first["data"]["contact_id"]
        update = telegram_update(
            2, "It's me again", user_id=202, first_name=family, last_name="Ivan"
        )
        await post_update(product, channel["id"], update)
        found = await stream.wait_for("contact.duplicates_found", count=1)
    chat2, b = found["data"]["chat_id"], found["data"]["contact_id"]
    assert chat2 != chat1 and b != a
    [candidate] = found["data"]["candidates"]
    assert candidate["contact_id"] == a and candidate["name"] == f"Ivan {family}"
    assert candidate["rule_name"] == "Similar name" and candidate["score"] == 100

    listed = await get(anna, f"/api/contacts/{b}/duplicates")
    assert listed["current"]["id"] == b and listed["chat_id"] == chat2 and listed["count"] == 1
    assert [(c["contact"]["id"], c["score"]) for c in listed["candidates"]] == [(a, 100)]

    # A case made from the first chat goes with its contact.
    await anna.http.post(f"/api/chats/{chat1}/accept")
    case = (await anna.http.post(f"/api/chats/{chat1}/actions/create_case")).json()
    assert case["contact_id"] == a

    # Only the chat's owner merges: accept first.
    refused = await anna.http.post(f"/api/contacts/{b}/merge", json={"duplicate_ids": [a]})
    assert refused.status_code == 409, refused.text
    await anna.http.post(f"/api/chats/{chat2}/accept")
    response = await anna.http.post(f"/api/contacts/{b}/merge", json={"duplicate_ids": [a]})
    assert response.status_code == 200, response.text
    merged = response.json()
    assert merged["survivor"]["id"] == b and merged["merged_ids"] == [a]
    assert merged["merged_by"] == anna.me["id"]
    assert {i["external_user_id"] for i in merged["survivor"]["identities"]} == {"101", "202"}
    again = await anna.http.post(f"/api/contacts/{b}/merge", json={"duplicate_ids": [a]})
    assert again.status_code == 200 and again.json()["merge_id"] == merged["merge_id"]

    for console in (anna, admin):
        gone = await console.http.get(f"/api/contacts/{a}")
        assert gone.status_code == 410, gone.text
        assert gone.json()["detail"]["survivor_id"] == b
    assert (await admin.http.get(f"/api/contacts/{a}/timeline")).status_code == 410

    # The chats and the case are the survivor's; the first account writes on into its chat.
    await eventually(lambda: get(anna, f"/api/chats/{chat1}"), lambda c: c["contact_id"] == b)
    await eventually(lambda: get(anna, f"/api/cases/{case['id']}"), lambda c: c["contact_id"] == b)
    update = telegram_update(3, "One more thing", user_id=101, first_name="Ivan", last_name=family)
    await post_update(product, channel["id"], update)
    timeline = await eventually(
        lambda: get(anna, f"/api/contacts/{b}/timeline"),
        lambda chats: sum(len(c["messages"]) for c in chats) == 3,
    )
    assert [c["id"] for c in timeline] == [chat2, chat1]  # newest first
    assert [m["text"] for m in timeline[1]["messages"]] == ["Hi, order 12", "One more thing"]
    assert timeline[0]["messages"][0]["direction"] == "in"
    assert all(c["contact_id"] == b and c["contact_name"] == f"{family} Ivan" for c in timeline)
    assert (await get(anna, f"/api/contacts/{b}/duplicates"))["count"] == 0
    merges = await get(anna, f"/api/contacts/{b}/merges")
    assert [m["merge_id"] for m in merges] == [merged["merge_id"]]
    for console in (admin, anna):
        await console.close()


async def test_editing_a_contact_and_who_may(product: Product, fake_telegram: FakeTelegram) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    family = surname()
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        update = telegram_update(1, "Hello", user_id=301, first_name="Olga", last_name=family)
        await post_update(product, channel["id"], update)
        offered = await stream.wait_for("chat.offered")
    chat_id, contact_id = offered["data"]["chat_id"], offered["data"]["contact_id"]
    path = f"/api/contacts/{contact_id}"

    # Offered, not accepted yet: she sees the contact but may not change it.
    assert (await get(anna, path))["name"] == f"Olga {family}"
    refused = await anna.http.patch(path, json={"account": "ACME"})
    assert refused.status_code == 409
    await anna.http.post(f"/api/chats/{chat_id}/accept")

    bad = await anna.http.patch(
        path, json={"phones": ["+7 916 123-45-67", "call me"], "emails": ["olga@"]}
    )
    assert bad.status_code == 422, bad.text
    problems = bad.json()["detail"]
    assert {p["loc"][-2] if p["loc"][-1] == 1 else p["loc"][-1] for p in problems} >= {"phones"}
    assert any("not a phone number" in p["msg"] for p in problems)
    assert any("not an e-mail address" in p["msg"] for p in problems)
    for body in ({"name": ""}, {"name": None}, {"nickname": "Olya"}, {"phones": "+79161234567"}):
        response = await anna.http.patch(path, json=body)
        assert response.status_code == 422, (body, response.text)
    assert (await get(anna, path))["phones"] == []  # nothing changed

    response = await anna.http.patch(
        path,
        json={
            "name": f"Olga {family}a",
            "phones": ["+7 (916) 123-45-67", "0049 30 123456", "+79161234567"],
            "emails": ["Olga@Example.COM"],
            "account": "  ACME  ",
        },
    )
    assert response.status_code == 200, response.text
    contact = response.json()
    assert contact["phones"] == ["+79161234567", "+4930123456"]
    assert contact["emails"] == ["olga@example.com"] and contact["account"] == "ACME"
    assert contact["name"] == f"Olga {family}a"
    cleared = (await anna.http.patch(path, json={"account": None})).json()
    assert cleared["account"] is None and cleared["phones"] == contact["phones"]
    # The chat shows the new name.
    await eventually(
        lambda: get(anna, f"/api/chats/{chat_id}"),
        lambda c: c["contact_name"] == f"Olga {family}a",
    )

    # Another agent holds none of its chats: no such contact for him; a supervisor may all.
    boris_name = f"boris-{chat_id[:8]}"
    await admin.http.post(
        "/api/admin/agents",
        json={"username": boris_name, "password": "boris-password", "display_name": "Boris"},
    )
    boris = await Console.login(product, boris_name, "boris-password")
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"account": "X"}),
        ("GET", "/duplicates", None),
        ("GET", "/timeline", None),
        ("GET", "/merges", None),
        ("POST", "/merge", {"duplicate_ids": [contact_id]}),
    ):
        response = await boris.http.request(method, path + suffix, json=body)
        assert response.status_code == 404, (method, suffix, response.text)
    assert (await admin.http.patch(path, json={"emails": []})).json()["emails"] == []
    assert (await admin.http.get(f"{path}/duplicates")).status_code == 200
    self_merge = await admin.http.post(f"{path}/merge", json={"duplicate_ids": [contact_id]})
    assert self_merge.status_code == 422
    unknown = await admin.http.post(f"{path}/merge", json={"duplicate_ids": ["nobody"]})
    assert unknown.status_code == 422 and "nobody" in unknown.json()["detail"]
    assert (await admin.http.get("/api/contacts/nobody")).status_code == 404
    for console in (admin, anna, boris):
        await console.close()


async def test_duplicate_rules_are_managed_by_supervisors(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, _ = await setup_desk(product, fake_telegram)
    rules_path = "/api/admin/duplicate-rules"
    assert (await anna.http.get(rules_path)).status_code == 403
    assert (await anna.http.post(rules_path, json={})).status_code == 403
    defaults = {r["name"] for r in await get(admin, rules_path)}
    assert {
        "Similar name",
        "Same phone",
        "Same e-mail",
        "Similar name and same account",
    } <= defaults

    invalid = [
        ({"name": "x", "conditions": []}, "at least 1"),
        (
            {"name": "x", "conditions": [{"field": "phone", "match": "similar", "threshold": 80}]},
            "compared exactly",
        ),
        ({"name": "x", "conditions": [{"field": "name", "match": "similar"}]}, "needs a threshold"),
        (
            {"name": "x", "conditions": [{"field": "name", "match": "similar", "threshold": 50}]},
            "greater than or equal to 70",
        ),
        (
            {"name": "x", "conditions": [{"field": "email", "match": "exact", "threshold": 90}]},
            "'similar' conditions only",
        ),
        ({"name": "x", "conditions": [{"field": "account", "match": "exact"}]}, "an account alone"),
        ({"name": "x", "conditions": [{"field": "phone", "match": "exact"}] * 2}, "one condition"),
        ({"name": "x", "conditions": [{"field": "age", "match": "exact"}]}, "'name'"),
        ({"name": "", "conditions": [{"field": "phone", "match": "exact"}]}, "at least 1"),
    ]
    for body, says in invalid:
        response = await admin.http.post(rules_path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert says in str(response.json()["detail"]), (body, response.text)
    duplicate = await admin.http.post(
        rules_path,
        json={"name": "Same phone", "conditions": [{"field": "phone", "match": "exact"}]},
    )
    assert duplicate.status_code == 409

    name = f"Same e-mail and account {surname()}"
    body = {
        "name": name,
        "conditions": [
            {"field": "email", "match": "exact"},
            {"field": "account", "match": "exact"},
        ],
        "active": False,
    }
    created = await admin.http.post(rules_path, json=body)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["active"] is False and rule["updated_by"] == admin.me["id"]
    path = f"{rules_path}/{rule['id']}"
    assert (await admin.http.patch(path, json={"active": True})).json()["active"] is True
    bad = await admin.http.patch(
        path, json={"conditions": [{"field": "account", "match": "exact"}]}
    )
    assert bad.status_code == 422
    assert (await admin.http.patch(path, json={"active": False})).json()["active"] is False
    listed = {r["id"]: r for r in await get(admin, rules_path)}
    assert listed[rule["id"]]["conditions"] == [
        {**c, "threshold": None} for c in body["conditions"]
    ]
    assert (await admin.http.patch(f"{rules_path}/nope", json={"active": True})).status_code == 404
    assert (await anna.http.patch(path, json={"active": True})).status_code == 403
    for console in (admin, anna):
        await console.close()


async def test_merge_while_both_customers_keep_writing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    family = surname()
    await anna.http.put("/api/me/status", json={"status": "active"})
    users = {401: ("Pavel", family), 402: (family, "Pavel")}
    update_ids = iter(range(1, 1000))

    async def write(user: int, text: str) -> None:
        first, last = users[user]
        update = telegram_update(
            next(update_ids), text, user_id=user, first_name=first, last_name=last
        )
        assert (await post_update(product, channel["id"], update)).status_code == 200

    await write(401, "x-0")
    await write(402, "y-0")
    chats = await eventually(lambda: anna.list_chats("new"), lambda c: len(c) == 2)
    by_user = {}
    for chat in chats:
        contact = await get(admin, f"/api/contacts/{chat['contact_id']}")
        by_user[int(contact["identities"][0]["external_user_id"])] = contact["id"]
    survivor, merged = by_user[402], by_user[401]

    async def keep_writing() -> None:
        for n in range(1, 16):
            await write(401, f"x-{n}")
            await write(402, f"y-{n}")

    async def merge_midway() -> Any:
        await asyncio.sleep(0.2)
        return await admin.http.post(
            f"/api/contacts/{survivor}/merge", json={"duplicate_ids": [merged]}
        )

    _, response = await asyncio.gather(keep_writing(), merge_midway())
    assert response.status_code == 200, response.text

    timeline = await eventually(
        lambda: get(admin, f"/api/contacts/{survivor}/timeline"),
        lambda chats: sum(len(c["messages"]) for c in chats) == 32,
        timeout=30,
    )
    # Every message is the survivor's, each account's in its own chats, in order. If a moved
    # account wrote again before chat heard of the merge, its message opened a chat on the
    # survivor and its chat from before was completed: one open chat per account either way.
    assert all(c["contact_id"] == survivor for c in timeline)
    by_account: dict[str, list[str]] = {"x": [], "y": []}
    open_chats: dict[str, int] = {"x": 0, "y": 0}
    for chat in reversed(timeline):  # oldest first
        texts = [m["text"] for m in chat["messages"]]
        account = texts[0][0]
        assert {t[0] for t in texts} == {account}, texts
        by_account[account] += texts
        open_chats[account] += chat["status"] != "completed"
    assert by_account == {a: [f"{a}-{n}" for n in range(16)] for a in "xy"}
    assert open_chats == {"x": 1, "y": 1}
    assert (await admin.http.get(f"/api/contacts/{merged}/timeline")).status_code == 410
    new = await eventually(lambda: anna.list_chats("new"), lambda chats: len(chats) == 2)
    assert {c["contact_id"] for c in new} == {survivor}
    for console in (admin, anna):
        await console.close()


def state(timeline: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a merge decides of a contact's chats: whose they are, open or not, their messages."""
    return [
        (c["id"], c["contact_id"], c["contact_name"], c["status"], [m["id"] for m in c["messages"]])
        for c in timeline
    ]


@pytest.mark.parametrize("product", ["distributed"], indirect=True)  # redelivers via RabbitMQ
async def test_a_merge_redelivered_by_the_broker_changes_nothing(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    family = surname()
    await anna.http.put("/api/me/status", json={"status": "active"})
    for n, (user, first, last) in enumerate(((501, "Anna", family), (502, family, "Anna")), 1):
        update = telegram_update(n, f"hi {n}", user_id=user, first_name=first, last_name=last)
        await post_update(product, channel["id"], update)
    chats = await eventually(lambda: anna.list_chats("new"), lambda c: len(c) == 2)
    survivor, merged = chats[0]["contact_id"], chats[1]["contact_id"]

    # A subscriber of our own keeps a copy of the merge event to deliver it again.
    connection = await aio_pika.connect_robust(product.env["AMQP_URL"])
    async with connection:
        channel_ = await connection.channel()
        exchange = await channel_.declare_exchange(
            "chatdesk", aio_pika.ExchangeType.TOPIC, durable=True
        )
        copy = await channel_.declare_queue("", exclusive=True)
        await copy.bind(exchange, routing_key="contact.merged")
        response = await admin.http.post(
            f"/api/contacts/{survivor}/merge", json={"duplicate_ids": [merged]}
        )
        assert response.status_code == 200
        message = await eventually(lambda: copy.get(fail=False), lambda m: m is not None)
        assert message is not None
        await eventually(
            lambda: get(admin, f"/api/contacts/{survivor}/timeline"),
            lambda chats: {c["contact_id"] for c in chats} == {survivor} and len(chats) == 2,
        )
        before = state(await get(admin, f"/api/contacts/{survivor}/timeline"))
        for _ in range(2):
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="contact.merged",
            )
    await asyncio.sleep(2)  # time for both deliveries to be handled
    assert state(await get(admin, f"/api/contacts/{survivor}/timeline")) == before
    merges = await get(admin, f"/api/contacts/{survivor}/merges")
    assert len(merges) == 1
    for console in (admin, anna):
        await console.close()


async def test_reading_follows_routing_and_merges_editing_needs_an_open_chat(
    product: Product, fake_telegram: FakeTelegram
) -> None:
    """Reading a contact takes a chat of it ever given (completed ones too, and those of
    contacts merged into it); editing takes one owned."""
    admin, anna, channel = await setup_desk(product, fake_telegram)
    family = surname()
    async with Stream(anna.ws_url()) as stream:
        await anna.http.put("/api/me/status", json={"status": "active"})
        update = telegram_update(1, "Hello", user_id=501, first_name="Vera", last_name=family)
        await post_update(product, channel["id"], update)
        offered = await stream.wait_for("chat.offered")
    chat_id, a = offered["data"]["chat_id"], offered["data"]["contact_id"]
    await anna.http.post(f"/api/chats/{chat_id}/accept")
    assert (await anna.http.post(f"/api/chats/{chat_id}/complete")).status_code == 200
    await eventually(
        lambda: anna.http.patch(f"/api/contacts/{a}", json={"account": "ACME"}),
        lambda r: r.status_code == 409,
    )
    assert (await get(anna, f"/api/contacts/{a}"))["picture_url"] is None

    # Another customer, of another desk: anna is never given their chat. A supervisor merges
    # hers into theirs; she may read the survivor then.
    other_admin, boris, other_channel = await setup_desk(product, fake_telegram)
    async with Stream(boris.ws_url()) as stream:
        await boris.http.put("/api/me/status", json={"status": "active"})
        update = telegram_update(1, "Hi", user_id=502, first_name="Vera", last_name=family)
        await post_update(product, other_channel["id"], update)
        b = (await stream.wait_for("chat.offered"))["data"]["contact_id"]
    assert (await anna.http.get(f"/api/contacts/{b}")).status_code == 404
    response = await admin.http.post(f"/api/contacts/{b}/merge", json={"duplicate_ids": [a]})
    assert response.status_code == 200, response.text
    assert response.json()["survivor"]["picture_url"] is None
    contact = await eventually(
        lambda: anna.http.get(f"/api/contacts/{b}"), lambda r: r.status_code == 200
    )
    assert {i["external_user_id"] for i in contact.json()["identities"]} == {"501", "502"}
    gone = await anna.http.get(f"/api/contacts/{a}")
    assert gone.status_code == 410 and gone.json()["detail"]["survivor_id"] == b
    assert (await anna.http.patch(f"/api/contacts/{b}", json={"account": "X"})).status_code == 409
    for console in (admin, anna, boris, other_admin):
        await console.close()
