"""A sign-up form in a real browser: the agent fills it in, the grade reads the page over CDP.

Every task gets its own Chromium with a fresh profile (``env.browser()``); the agent reaches
it through the control port, with Playwright or any CDP client (see ``drive.py``).
"""

import base64
from pathlib import Path

from hud import Environment

# The browser cannot read files (it is confined, and file:// is blocked): the page goes in
# the URL itself. A larger site would be served over http on 127.0.0.1.
FORM = (Path(__file__).resolve().parent / "form.html").read_bytes()
PAGE = "data:text/html;base64," + base64.b64encode(FORM).decode()

env = Environment("browser-form", version="1.0.0")
browser = env.browser()


@env.template("sign-up")
async def sign_up(name: str = "Ada Lovelace", email: str = "ada@example.com", plan: str = "pro"):
    """Fill in and submit the newsletter sign-up form."""
    await browser.goto(PAGE)
    yield (
        f"The browser shows a sign-up form. Sign up as {name} with the email {email} on the "
        f"{plan} plan, accept the terms and submit the form. Answer 'done' when it is sent."
    )
    submitted = await browser.evaluate("window.submission ?? null") or {}
    checks = {
        "submitted": bool(submitted),
        "name": submitted.get("name") == name,
        "email": submitted.get("email") == email,
        "plan": submitted.get("plan") == plan,
        "terms": submitted.get("terms") is True,
    }
    yield {
        "reward": 1.0 if all(checks.values()) else 0.0,
        "subscores": {key: float(ok) for key, ok in checks.items()},
        "info": {"thanks": await browser.text("#thanks")},
    }
