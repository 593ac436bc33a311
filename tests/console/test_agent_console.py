"""The agent console as an agent uses it, in Chromium, against the running product.

An agent logs in and goes Active; a customer writes on Telegram (the fake Bot API); the offer
shows in New with a desktop notification and the count in the tab's title; the agent accepts,
reads the conversation and the contact beside it, replies with text and a file, sees what
became of each reply, and completes the chat. Another agent, in their own browser, never sees
any of it.
"""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import AgentTab
from tests.support.desk import AGENT_PASSWORD, eventually, post_update, setup_desk, telegram_update
from tests.support.fake_telegram import BLOCKED, FakeTelegram
from tests.support.pictures import png
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


async def other_agent(product: Product, admin: Console, name: str) -> Console:
    """An agent of their own queue, who must never see Anna's chats."""
    agent = (
        await admin.http.post(
            "/api/admin/agents",
            json={"username": name, "password": AGENT_PASSWORD, "display_name": "Boris"},
        )
    ).json()
    await admin.http.post("/api/admin/queues", json={"name": name, "agent_ids": [agent["id"]]})
    return await Console.login(product, name, AGENT_PASSWORD)


async def test_an_agent_answers_a_telegram_chat_in_the_console(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    admin, anna, channel = await setup_desk(product, fake_telegram)
    boris = await other_agent(product, admin, f"boris-{anna.me['username'][-8:]}")
    user = 4242
    fake_telegram.add_profile_photo(user, (png(160, 160, (90, 140, 200)), 160, 160))

    tab = await AgentTab.open(browser, product.gateway)
    await tab.login(anna.me["username"], AGENT_PASSWORD)
    other = await AgentTab.open(browser, product.gateway)
    await other.login(boris.me["username"], AGENT_PASSWORD)
    await other.go_active()
    await tab.go_active()

    # A customer writes: the offer shows, with a notification and the count in the title.
    await post_update(
        product, channel["id"], telegram_update(1, "Hello, my order is late", user_id=user)
    )
    offer = tab.new_chats()
    await expect(offer).to_have_count(1)
    await expect(offer).to_contain_text("Ivan Petrov")
    await expect(offer).to_contain_text("Hello, my order is late")
    await expect(tab.page).to_have_title("(1) chatdesk")
    shown = await eventually(tab.notifications, bool)
    assert [(n["title"], n["body"]) for n in shown] == [
        ("New chat: Ivan Petrov", "Hello, my order is late")
    ]
    await tab.screenshot("chats-offer")

    # Accept: the chat moves to Active and opens.
    await offer.get_by_role("button", name="Accept chat with Ivan Petrov").click()
    await expect(tab.new_chats()).to_have_count(0)
    await expect(tab.active_chats()).to_have_count(1)
    await expect(tab.page).to_have_title("chatdesk")
    page = tab.page
    await expect(page.get_by_role("region", name="Conversation with Ivan Petrov")).to_be_visible()
    await expect(tab.messages()).to_have_count(1)
    await expect(tab.messages().first).to_contain_text("Customer:")
    await expect(tab.messages().first).to_contain_text("Hello, my order is late")

    contact = page.get_by_role("complementary", name="Contact")
    await expect(contact.get_by_role("heading", name="Ivan Petrov")).to_be_visible()
    await expect(contact).to_contain_text("Telegram")
    await expect(contact).to_contain_text("Support bot")
    await expect(contact.get_by_role("img", name="Picture of Ivan Petrov")).to_be_visible()

    # The customer sends a photo: it shows in the conversation.
    photo = fake_telegram.photo_sizes((png(320, 200, (230, 170, 60)), 320, 200))
    update = telegram_update(2, "", user_id=user)
    del update["message"]["text"]
    update["message"]["photo"] = photo
    await post_update(product, channel["id"], update)
    picture = tab.messages().nth(1).get_by_role("img")
    await expect(picture).to_be_visible()
    assert await picture.evaluate("img => img.naturalWidth") == 320

    # A text reply: it shows at once, then as sent once Telegram took it.
    composer = page.get_by_role("textbox", name="Message")
    await composer.fill("Let me check")
    await composer.press("Enter")
    await expect(composer).to_have_value("")
    reply = tab.messages().nth(2)
    await expect(reply).to_contain_text("You:")
    await expect(reply).to_contain_text("Let me check")
    await expect(reply.locator(".delivery")).to_have_text("sent")
    sent = await fake_telegram.wait_sent(1)
    assert sent[-1].params["text"] == "Let me check"

    # A file: sent as a document, downloadable from the conversation.
    await page.get_by_label("Attach file").set_input_files(
        {"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": PDF}
    )
    document = tab.messages().nth(3)
    await expect(document.get_by_role("button", name="Download invoice.pdf")).to_be_visible()
    await expect(document.locator(".delivery")).to_have_text("sent")
    (call,) = await fake_telegram.wait_sent(1, "sendDocument")
    assert call.params["document"].data == PDF
    async with page.expect_download() as download_info:
        await document.get_by_role("button", name="Download invoice.pdf").click()
    download = await download_info.value
    assert download.suggested_filename == "invoice.pdf"
    assert (await download.path()).read_bytes() == PDF

    # Telegram refuses the next reply: the agent sees that, and why.
    fake_telegram.errors["sendMessage"] = [BLOCKED]
    await composer.fill("Are you still there?")
    await composer.press("Enter")
    refused = tab.messages().nth(4)
    await expect(refused.locator(".delivery")).to_have_text("failed")
    await expect(refused).to_contain_text("blocked")
    await tab.screenshot("conversation")

    # The chat actions menu: complete the chat.
    await page.get_by_role("button", name="Chat actions").click()
    await page.get_by_role("menuitem", name="Complete chat").click()
    await expect(tab.active_chats()).to_have_count(0)
    await expect(page.get_by_text("This chat is completed.")).to_be_visible()

    # Boris, active all along in his own queue, saw none of it.
    await expect(other.new_chats()).to_have_count(0)
    await expect(other.active_chats()).to_have_count(0)
    await expect(other.page.get_by_text("No chats waiting.")).to_be_visible()
    assert await other.notifications() == []
    await expect(other.page).to_have_title("chatdesk")

    for opened in (tab, other):
        await opened.close()
    for console in (admin, anna, boris):
        await console.close()


@pytest.mark.parametrize("product", ["embedded"], indirect=True)
async def test_a_late_message_takes_its_telegram_place_live(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    """The stream brings messages in the order they were stored; the console shows Telegram's."""
    admin, anna, channel = await setup_desk(product, fake_telegram)
    tab = await AgentTab.open(browser, product.gateway)
    await tab.login(anna.me["username"], AGENT_PASSWORD)
    await tab.go_active()
    sent = int(time.time())
    await post_update(product, channel["id"], telegram_update(1, "First", user_id=77, date=sent))
    await tab.new_chats().get_by_role("button", name="Accept chat with Ivan Petrov").click()
    await tab.active_chats().get_by_role("link").click()
    await expect(tab.messages()).to_have_count(1)

    # Telegram numbered them 2 and 3, in the same second; 3 reaches us first.
    await post_update(product, channel["id"], telegram_update(3, "Third", user_id=77, date=sent))
    await expect(tab.messages()).to_have_count(2)
    await post_update(product, channel["id"], telegram_update(2, "Second", user_id=77, date=sent))
    await expect(tab.messages().locator(".text")).to_have_text(["First", "Second", "Third"])
    await tab.page.reload()  # and the server lists them the same way
    await expect(tab.messages().locator(".text")).to_have_text(["First", "Second", "Third"])

    await tab.close()
    await admin.close()
    await anna.close()
