"""Two gateway processes: an agent's console gets the same events from either.

Both replicas consume the bus for the agents' event log (competing for each event), and each
serves its own connections from that log; the agent has the console open on both.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import AgentTab
from tests.support.desk import AGENT_PASSWORD, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import Product

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("product", ["distributed"], indirect=True)
async def test_an_agent_sees_the_same_events_on_either_gateway(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    async with product.replica("gateway") as second_gateway:
        first = await AgentTab.open(browser, product.gateway)
        second = await AgentTab.open(browser, second_gateway)
        for tab in (first, second):
            await tab.login(anna.me["username"], AGENT_PASSWORD)
        await first.go_active()
        await expect(second.page.get_by_role("switch", name="Active")).to_have_attribute(
            "aria-checked", "true"
        )

        await post_update(product, channel["id"], telegram_update(1, "Message 1", user_id=7))
        for tab in (first, second):
            await expect(tab.new_chats()).to_have_count(1)
            assert [n["title"] for n in await tab.notifications()] == ["New chat: Ivan Petrov"]
        await second.new_chats().get_by_role("button", name="Accept chat with Ivan Petrov").click()
        for tab in (first, second):
            await expect(tab.active_chats()).to_have_count(1)
        await first.active_chats().get_by_role("link").click()

        # A burst of messages, and replies from either console: both show all of them, in order.
        for n in range(2, 9):
            await post_update(product, channel["id"], telegram_update(n, f"Message {n}", user_id=7))
        composer = second.page.get_by_role("textbox", name="Message")
        await composer.fill("Reading them all")
        await composer.press("Enter")
        texts = [f"Message {n}" for n in range(1, 9)]
        for tab in (first, second):
            shown = tab.messages().locator(".text")
            await expect(shown.filter(has_text="Message")).to_have_text(texts)
            await expect(shown.filter(has_text="Reading them all")).to_have_count(1)
            await expect(
                tab.messages().filter(has_text="Reading them all").locator(".delivery")
            ).to_have_text("sent")
        for tab in (first, second):
            await tab.close()
    await admin.close()
    await anna.close()
