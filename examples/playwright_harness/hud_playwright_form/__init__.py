"""A third-party harness: fills in web forms with Playwright, over the ``cdp`` capability."""

from __future__ import annotations

import re
import time
from typing import Any

from hud.agents import Agent

DETAILS = re.compile(r"as (?P<name>.+?) with the email (?P<email>\S+) on the (?P<plan>\w+) plan")


class PlaywrightFormFiller(Agent):
    """Reads name, email and plan from the prompt; fills and submits the page's form."""

    name = "playwright_form"

    async def __call__(self, run: Any) -> None:
        from playwright.async_api import async_playwright

        found = DETAILS.search(run.prompt_text)
        if found is None:
            run.answer = "I cannot tell what to fill in."
            return
        browsers = [b.name for b in run.client.manifest.capabilities
                    if b.protocol.startswith("cdp/")]
        devtools = await run.client.open(browsers[0])  # this task's browser, tunnelled
        async with async_playwright() as playwright:
            browser = await playwright.chromium.connect_over_cdp(devtools.endpoint)
            page = browser.contexts[0].pages[0]
            for label, value in (("Name", found["name"]), ("Email", found["email"])):
                await self.act(run, f"fill {label}", page.get_by_label(label).fill(value))
            await self.act(run, "choose plan", page.get_by_label("Plan").select_option(
                found["plan"]))
            await self.act(run, "accept terms", page.get_by_role("checkbox").check())
            await self.act(run, "submit", page.get_by_role("button").click())
            await page.wait_for_selector("#thanks:not([hidden])")
            run.answer = "done"
            await browser.close()  # disconnects; the browser belongs to the task

    @staticmethod
    async def act(run: Any, what: str, action: Any) -> None:
        started = time.monotonic()
        await action
        run.record("action", time.monotonic() - started, action=what)
