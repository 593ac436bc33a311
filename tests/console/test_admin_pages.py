"""Supervisor pages: agents, queues and channels, created, edited and deactivated in the console,
with the API's validation errors shown beside the fields they are about."""

from __future__ import annotations

import secrets

import pytest
from playwright.async_api import Browser, Locator, expect

from tests.support.browser import AgentTab
from tests.support.desk import new_bot_token
from tests.support.fake_telegram import FakeTelegram
from tests.support.product import ADMIN_PASSWORD, Product

pytestmark = pytest.mark.e2e


def form(tab: AgentTab, title: str) -> Locator:
    return tab.page.get_by_role("form", name=title)


async def admin_section(tab: AgentTab, name: str) -> None:
    nav = tab.page.get_by_role("navigation", name="Administration")
    await nav.get_by_role("link", name=name).click()


@pytest.mark.parametrize("product", ["embedded"], indirect=True)
async def test_a_supervisor_sets_up_agents_queues_and_channels(
    product: Product, fake_telegram: FakeTelegram, browser: Browser
) -> None:
    suffix = secrets.token_hex(3)
    tab = await AgentTab.open(browser, product.gateway)
    page = tab.page
    await page.goto("/")
    await expect(page.get_by_role("button", name="Log in")).to_be_visible()
    await tab.screenshot("login")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    await tab.login("admin", ADMIN_PASSWORD)

    # Agents: refused values are explained under their fields; a good one is listed.
    await page.get_by_role("link", name="Administration").click()
    new_agent = form(tab, "New agent")
    await new_agent.get_by_label("Username").fill("no spaces allowed")
    await new_agent.get_by_label("Password").fill("short")
    await new_agent.get_by_label("Display name").fill("Olga")
    await new_agent.get_by_role("button", name="Create").click()
    await expect(new_agent.locator("#field-form-new-agent-username-error")).to_contain_text(
        "match pattern"
    )
    await expect(new_agent.get_by_text("at least 8 characters")).to_be_visible()
    await new_agent.get_by_label("Username").fill(f"olga-{suffix}")
    await new_agent.get_by_label("Password").fill("olga-password")
    await new_agent.get_by_role("button", name="Create").click()
    olga = (
        page.get_by_role("table", name="Agents")
        .get_by_role("row")
        .filter(has_text=f"olga-{suffix}")
    )
    await expect(olga).to_contain_text("Olga")
    await olga.get_by_role("button", name=f"Deactivate olga-{suffix}").click()
    await expect(
        olga.get_by_role("button", name=f"Activate olga-{suffix}", exact=True)
    ).to_be_visible()
    await olga.get_by_role("button", name=f"Activate olga-{suffix}", exact=True).click()
    await expect(olga.get_by_role("button", name=f"Deactivate olga-{suffix}")).to_be_visible()
    await olga.get_by_role("button", name=f"Edit olga-{suffix}").click()
    edit = form(tab, f"Edit olga-{suffix}")
    await edit.get_by_label("Display name").fill("Olga S.")
    await edit.get_by_role("button", name="Save").click()
    await expect(olga).to_contain_text("Olga S.")
    await tab.screenshot("admin-agents")

    # Queues: the form is the API's, agents to pick included.
    await admin_section(tab, "Queues")
    new_queue = form(tab, "New queue")
    await new_queue.get_by_role("button", name="Create").click()  # without a name
    await expect(new_queue.locator("#field-form-new-queue-name-error")).to_have_text(
        "String should have at least 1 character"
    )
    await new_queue.get_by_label("Name").fill(f"Billing {suffix}")
    await new_queue.get_by_label("Accept timeout (s)").fill("45")
    await new_queue.get_by_label(f"Olga S. (olga-{suffix})").check()
    await new_queue.get_by_role("button", name="Create").click()
    queue_row = (
        page.get_by_role("table", name="Queues")
        .get_by_role("row")
        .filter(has_text=f"Billing {suffix}")
    )
    await expect(queue_row).to_contain_text("Olga")
    await expect(queue_row).to_contain_text("45")
    await tab.screenshot("admin-queues")

    # Channels: Telegram refuses a token, and the form says so; then a good one, edited and
    # deactivated.
    await admin_section(tab, "Channels")
    new_channel = form(tab, "New Telegram channel")
    refused = new_bot_token()
    fake_telegram.refused_tokens.add(refused)
    await new_channel.get_by_label("Name").fill(f"Billing bot {suffix}")
    await new_channel.get_by_label("Queue").select_option(label=f"Billing {suffix}")
    await new_channel.get_by_label("Token").fill(refused)
    await new_channel.get_by_label("Secret").fill("a-webhook-secret")
    await new_channel.get_by_label("Api base").fill(fake_telegram.url)
    await new_channel.get_by_role("button", name="Create").click()
    await expect(new_channel.get_by_role("alert")).to_contain_text("Telegram")
    await new_channel.get_by_label("Token").fill(new_bot_token())
    await new_channel.get_by_label("Secret").fill("a-webhook-secret")
    await new_channel.get_by_role("button", name="Create").click()
    channels = page.get_by_role("table", name="Channels")
    row = channels.get_by_role("row").filter(has_text=f"Billing bot {suffix}")
    await expect(row).to_contain_text("Yes")

    await row.get_by_role("button", name=f"Edit Billing bot {suffix}").click()
    edit = form(tab, f"Edit Billing bot {suffix}")
    await edit.get_by_label("Name").fill(f"Invoices bot {suffix}")
    await edit.get_by_role("button", name="Save").click()
    row = channels.get_by_role("row").filter(has_text=f"Invoices bot {suffix}")
    await expect(row).to_be_visible()
    await row.get_by_role("button", name=f"Deactivate Invoices bot {suffix}").click()
    await expect(row.get_by_role("cell", name="No", exact=True)).to_be_visible()
    await expect(
        row.get_by_role("button", name=f"Activate Invoices bot {suffix}", exact=True)
    ).to_be_visible()
    await tab.screenshot("admin-channels")
    await tab.close()
