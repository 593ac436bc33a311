"""What became of a reply, as the agent sees it: Messenger tells delivered, then read."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import AgentTab
from tests.support.desk import AGENT_PASSWORD
from tests.support.fake_facebook import FakeFacebook
from tests.support.messenger import (
    delivery_event,
    new_psid,
    now_ms,
    post_webhook,
    read_event,
    setup_facebook_desk,
    text_event,
    webhook,
)
from tests.support.product import Product

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("product", ["embedded"], indirect=True)
async def test_a_reply_shows_delivered_then_read(
    product: Product, fake_facebook: FakeFacebook, browser: Browser
) -> None:
    admin, anna, channel, page = await setup_facebook_desk(product, fake_facebook)
    tab = await AgentTab.open(browser, product.gateway)
    await tab.login(anna.me["username"], AGENT_PASSWORD)
    await tab.go_active()
    psid = new_psid()
    first = webhook(page, text_event(page, psid, "Is my parcel on its way?"))
    assert (await post_webhook(product, channel["id"], first, page.app_secret)).is_success
    await tab.new_chats().get_by_role("button", name="Accept chat").click()

    composer = tab.page.get_by_role("textbox", name="Message")
    await composer.fill("It left the warehouse today.")
    await composer.press("Enter")
    status = tab.messages().filter(has_text="It left the warehouse").locator(".delivery")
    await expect(status).to_have_text("sent")
    delivered = webhook(page, delivery_event(page, psid, now_ms(), [fake_facebook.last_message_id]))
    assert (await post_webhook(product, channel["id"], delivered, page.app_secret)).is_success
    await expect(status).to_have_text("delivered")
    read = webhook(page, read_event(page, psid, now_ms()))
    assert (await post_webhook(product, channel["id"], read, page.app_secret)).is_success
    await expect(status).to_have_text("read")
    await tab.close()
    await admin.close()
    await anna.close()
