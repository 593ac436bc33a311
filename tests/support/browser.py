"""The agent console in a real browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browsers here, so it drives `/usr/bin/chromium` (`.ci/run`
installs it). Each agent gets their own browser context (their own tab, storage and
permissions), with desktop notifications allowed and every `Notification` the page shows
recorded in `window.shown`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# `make screenshots` points this at docs/screenshots; other runs keep theirs out of the tree.
SCREENSHOTS = Path(
    os.environ.get("CHATDESK_SCREENSHOTS") or Path(tempfile.gettempdir()) / "chatdesk-screenshots"
)

# The browser's own Notification, wrapped so that the test sees what the console showed.
RECORD_NOTIFICATIONS = """
window.shown = [];
const Real = window.Notification;
class Recorded extends Real {
  constructor(title, options) {
    super(title, options);
    window.shown.push({ title, body: options?.body, tag: options?.tag });
  }
}
Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
Recorded.requestPermission = (...args) => Real.requestPermission(...args);
window.Notification = Recorded;
"""

expect.set_options(timeout=20_000)  # a 2-core machine running the whole product


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class AgentTab:
    """One agent's console in its own browser context."""

    def __init__(self, context: BrowserContext, page: Page, base_url: str) -> None:
        self.context = context
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    @classmethod
    async def open(cls, browser: Browser, base_url: str) -> AgentTab:
        context = await browser.new_context(
            base_url=base_url,
            viewport={"width": 1280, "height": 800},
            permissions=["notifications"],
        )
        await context.add_init_script(RECORD_NOTIFICATIONS)
        page = await context.new_page()
        return cls(context, page, base_url)

    async def login(self, username: str, password: str) -> None:
        await self.page.goto("/")
        await self.page.get_by_label("Username").fill(username)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Log in").click()
        await expect(self.page.get_by_role("heading", name="New")).to_be_visible()

    async def go_active(self) -> None:
        switch = self.page.get_by_role("switch", name="Active")
        await expect(switch).to_have_attribute("aria-checked", "false")
        await switch.click()
        await expect(switch).to_have_attribute("aria-checked", "true")

    def new_chats(self) -> Any:
        return self.page.get_by_role("list", name="New chats").get_by_role("listitem")

    def active_chats(self) -> Any:
        return self.page.get_by_role("list", name="Active chats").get_by_role("listitem")

    def messages(self) -> Any:
        return self.page.get_by_role("list", name="Messages").get_by_role("listitem")

    async def notifications(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = await self.page.evaluate("window.shown")
        return shown

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=SCREENSHOTS / f"{name}.png")

    async def close(self) -> None:
        assert not self.errors, self.errors  # the console never threw
        await self.context.close()
