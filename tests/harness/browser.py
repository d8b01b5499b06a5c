"""Debian's Chromium, headless, driven by Playwright for Python (never a browser download of
Playwright's own: ``make test`` installs ``chromium`` with apt-get)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# No outside traffic: a browser on this machine reaches only the console under test.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("chromium not found: run `make test` (installs it with apt-get as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Each page as a PNG: into ``MAILINTAKE_SCREENSHOTS`` (``make screenshots`` writes
    ``docs/console/``), else into the test's temporary directory."""

    def __init__(self, fallback: Path) -> None:
        self.directory = Path(os.environ.get("MAILINTAKE_SCREENSHOTS") or fallback)
        self.directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, page: Page, name: str) -> Path:
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


def reload_until(page: Page, ready: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Reload the page until ``ready()`` holds (what the pipeline does takes its time)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(1)
        page.reload()


UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]')]
  .filter((el) => el.offsetParent !== null || el.type === 'checkbox')
  .filter((el) => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                    || (el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""


def unlabelled(page: Page) -> list[str]:
    """The visible controls and links of the page that have no name a screen reader says."""
    found: list[str] = page.evaluate(UNLABELLED)
    return found
