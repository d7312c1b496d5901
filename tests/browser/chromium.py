"""Debian's chromium, driven by Playwright: never a downloaded browser."""

from __future__ import annotations

import shutil

from playwright.sync_api import Browser, Playwright

# scripts/system-deps.sh installs it (`make test` runs that first).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
