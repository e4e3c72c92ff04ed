"""Play one sign-up task by hand with Playwright, through the environment's port.

    hud serve examples/browser/env.py --port 8765 &
    python examples/browser/drive.py ws://127.0.0.1:8765
"""

import asyncio
import sys

from playwright.async_api import async_playwright

from hud.client import Client, open_client


async def fill_in(client: Client, name: str, email: str, plan: str) -> None:
    """What an agent would do: drive the task's own browser over CDP, through the tunnel."""
    devtools = await client.open("browser")  # endpoint: this task's browser, tunnelled
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(devtools.endpoint)
        page = browser.contexts[0].pages[0]
        await page.fill("#name", name)
        await page.fill("#email", email)
        await page.select_option("#plan", plan)
        await page.check("#terms")
        await page.click("#submit")
        await page.wait_for_selector("#thanks:not([hidden])")
        await browser.close()  # disconnects; the browser itself belongs to the task


async def main(url: str) -> None:
    async with open_client(url) as client:
        started = await client.start("sign-up", {"plan": "pro"})
        print(started.prompt, file=sys.stderr)
        await fill_in(client, "Ada Lovelace", "ada@example.com", "pro")
        graded = await client.grade("done")
        print(graded.reward)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765"))
