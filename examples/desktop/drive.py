"""Play one shopping-list task by hand over VNC, through the environment's port.

    hud serve examples/desktop/env.py --port 8765 &
    python examples/desktop/drive.py ws://127.0.0.1:8765   # prints 1.0; writes screen.png
"""

import asyncio
import sys

from hud.client import Client, open_client


async def add_items(client: Client, items: list[str]) -> bytes:
    """What an agent would do: look at the screen, click into the field, type. Returns the
    last screenshot (PNG)."""
    screen = await client.open("screen")  # this task's display, with its password
    await screen.click(200, 70)  # the Item field (the window sits at 40,40)
    for item in items:
        await screen.type(item)
        await screen.press("Return")
    await asyncio.sleep(0.3)  # let the app redraw before looking
    return await screen.screenshot()


async def main(url: str) -> None:
    async with open_client(url) as client:
        await client.start("shopping-list", {"items": "milk, eggs"})
        png = await add_items(client, ["milk", "eggs"])
        with open("screen.png", "wb") as out:
            out.write(png)
        print((await client.grade("done")).reward)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765"))
