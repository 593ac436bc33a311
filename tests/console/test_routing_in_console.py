"""Routing as the agent sees it in the console: an offer counts down to its accept limit and
leaves New when it lapses; a chat transferred to another agent leaves one console for the
other's Active list."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import AgentTab
from tests.support.desk import AGENT_PASSWORD, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("product", ["embedded"], indirect=True)
async def test_an_offer_lapses_and_a_chat_is_transferred(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    queue = f"/api/admin/queues/{channel['queue_id']}"
    assert (await admin.http.patch(queue, json={"accept_timeout_s": 5})).is_success
    boris_name = f"boris-{anna.me['username'][-8:]}"
    boris_agent = (
        await admin.http.post(
            "/api/admin/agents",
            json={"username": boris_name, "password": AGENT_PASSWORD, "display_name": "Boris"},
        )
    ).json()
    tab = await AgentTab.open(browser, product.gateway)
    await tab.login(anna.me["username"], AGENT_PASSWORD)
    await tab.go_active()
    other = await AgentTab.open(browser, product.gateway)
    await other.login(boris_name, AGENT_PASSWORD)

    # An offer with a countdown to the accept limit, which lapses: it leaves New.
    await post_update(product, channel["id"], telegram_update(1, "Anyone?", user_id=11))
    offer = tab.new_chats()
    await expect(offer).to_have_count(1)
    await expect(offer.get_by_role("timer", name="Time left to accept")).to_contain_text(
        "to accept"
    )
    await expect(offer).to_have_count(0, timeout=30_000)
    await expect(tab.page).to_have_title("chatdesk")

    # Another customer: Anna accepts, then transfers the chat to Boris from the actions menu.
    assert (await admin.http.patch(queue, json={"accept_timeout_s": 60})).is_success
    await post_update(
        product,
        channel["id"],
        telegram_update(2, "Billing question", user_id=12, first_name="Olga"),
    )
    olga = tab.new_chats().filter(has_text="Olga Petrov")
    await olga.get_by_role("button", name="Accept chat with Olga Petrov").click()
    await tab.active_chats().filter(has_text="Olga Petrov").get_by_role("link").click()
    await tab.page.get_by_role("button", name="Chat actions").click()
    await tab.page.get_by_role("menuitem", name="Transfer chat").click()
    dialog = tab.page.get_by_role("dialog", name="Transfer the chat with Olga Petrov")
    await dialog.get_by_label("To").select_option(label=f"Boris ({boris_name}), inactive")
    await dialog.get_by_role("button", name="Transfer").click()
    await expect(tab.active_chats().filter(has_text="Olga Petrov")).to_have_count(0)
    await expect(other.active_chats().filter(has_text="Olga Petrov")).to_have_count(1)
    boris = await Console.login(product, boris_name, AGENT_PASSWORD)
    active = await boris.list_chats("active")
    assert [(c["contact_name"], c["agent_id"]) for c in active] == [
        ("Olga Petrov", boris_agent["id"])
    ]
    for opened in (tab, other):
        await opened.close()
    for console in (admin, anna, boris):
        await console.close()
