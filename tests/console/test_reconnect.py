"""The console's connection drops and comes back: it reconnects with `resume_after`, and shows
every event it missed, once. Typing goes on meanwhile; a reply that could not go says so and
goes on request."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, WebSocket, expect

from tests.support.browser import AgentTab
from tests.support.desk import AGENT_PASSWORD, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product
from tests.support.proxy import proxy

pytestmark = pytest.mark.e2e

# The id of the last event the console took in (it keeps it for the tab).
LAST_SEEN = """Object.entries(sessionStorage)
  .find(([key]) => key.startsWith('chatdesk.last-event.'))[1]"""


@pytest.mark.parametrize("product", ["embedded"], indirect=True)
async def test_after_a_network_drop_the_console_shows_what_it_missed_once(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with proxy(product.ports["gateway"]) as network:
        tab = await AgentTab.open(browser, network.url)
        sockets: list[WebSocket] = []
        tab.page.on("websocket", lambda socket: sockets.append(socket))
        await tab.login(anna.me["username"], AGENT_PASSWORD)
        await tab.go_active()
        await post_update(product, channel["id"], telegram_update(1, "Hi there", user_id=1))
        await tab.new_chats().get_by_role("button", name="Accept chat with Ivan Petrov").click()
        await expect(tab.messages()).to_have_count(1)
        await post_update(product, channel["id"], telegram_update(2, "Still here", user_id=1))
        await expect(tab.messages()).to_have_count(2)
        last_seen = await tab.page.evaluate(LAST_SEEN)

        network.cut()
        await expect(tab.page.get_by_role("status")).to_have_text("Connection lost. Reconnecting…")
        # Meanwhile: the customer writes again, and a second customer writes.
        await post_update(product, channel["id"], telegram_update(3, "Hello??", user_id=1))
        await post_update(
            product, channel["id"], telegram_update(4, "Question", user_id=2, first_name="Olga")
        )
        await eventually(lambda: anna.list_chats("new"), bool)
        # The agent types on; the reply cannot go and says so.
        composer = tab.page.get_by_role("textbox", name="Message")
        await composer.fill("Sorry, one moment")
        await composer.press("Enter")
        await expect(composer).to_have_value("")
        pending = tab.messages().filter(has_text="Sorry, one moment")
        await expect(pending.locator(".delivery")).to_have_text("not sent")

        network.restore()
        await expect(tab.page.get_by_text("Connection lost. Reconnecting…")).to_have_count(0)
        assert f"resume_after={last_seen}" in sockets[-1].url
        await expect(tab.messages()).to_have_count(4)
        texts = tab.messages().locator(".text")
        await expect(texts).to_have_text(["Hi there", "Still here", "Hello??", "Sorry, one moment"])
        offered = tab.new_chats()
        await expect(offered).to_have_count(1)
        await expect(offered).to_contain_text("Olga Petrov")
        shown = await eventually(tab.notifications, lambda shown: len(shown) == 2)
        assert [n["title"] for n in shown] == ["New chat: Ivan Petrov", "New chat: Olga Petrov"]

        await pending.get_by_role("button", name="Retry").click()
        await expect(pending.locator(".delivery")).to_have_text("sent")
        assert (await fake_telegram.wait_sent(1))[-1].params["text"] == "Sorry, one moment"
        await expect(texts).to_have_text(["Hi there", "Still here", "Hello??", "Sorry, one moment"])
        await tab.close()
    await admin.close()
    await anna.close()
