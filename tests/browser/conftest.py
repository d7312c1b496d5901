"""A real chromium on the console of a real eds-server process."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect, sync_playwright

from .chromium import launch

expect.set_options(timeout=10_000)  # the page refreshes every 3 s; a few refreshes at most


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@dataclass
class Console:
    page: Page
    url: str  # the server's
    console_messages: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def accessibility_violations(self) -> str:
        """What axe-core finds against WCAG 2.2 A and AA (and its best practices) on the page as it is now."""
        tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
        results = Axe().run(self.page, options={"runOnly": {"type": "tag", "values": tags}})
        assert results.response["passes"], "axe-core checked nothing"
        return "" if results.violations_count == 0 else results.generate_report()

    def open(self) -> Console:
        self.page.goto(f"{self.url}/ui/")
        expect(self.page.locator("#service-list")).not_to_have_attribute("aria-busy", "true")
        return self


@pytest.fixture
def console_for(browser, eds_server):
    """console_for(viewport=...) -> a Console on a new real server (sqlite store, 2 workers), page not yet opened."""
    contexts, consoles = [], []

    def make(viewport: dict | None = None, **server_options) -> Console:
        server = eds_server(**server_options)
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        console = Console(page, server.url)
        page.on(
            "console",
            lambda m: m.type in ("error", "warning") and console.console_messages.append(f"{m.type}: {m.text}"),
        )
        page.on("pageerror", lambda error: console.page_errors.append(str(error)))
        consoles.append(console)
        return console

    yield make
    for context in contexts:
        context.close()
    for console in consoles:
        assert console.page_errors == [], "the page's JavaScript threw"


@pytest.fixture
def console(console_for):
    return console_for()
