"""A real browser for the web app's tests: Debian's chromium, driven by Playwright.

Playwright never downloads a browser here: it launches `/usr/bin/chromium` (`CHROMIUM` to
override) headless. The policy is the Orthanc peer's (tests/peers.py): without chromium or
Playwright a browser test is skipped, and fails under `CI=true` (`.ci/run` installs chromium).
Screenshots go to `TEST_ARTIFACTS` (default `test-artifacts/` in the repository).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

INSTALL_HINT = "apt-get install chromium (and pip install -r requirements-dev.txt)"


def chromium_path() -> str | None:
    """The chromium executable to drive, if installed."""
    return shutil.which(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def require_chromium() -> str:
    """The chromium path; skip the test without it, or fail it when `CI=true`."""
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is not None:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"chromium missing: {INSTALL_HINT}")
    pytest.skip(f"chromium missing: {INSTALL_HINT}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own cookies and cache); browser errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder that receives the screenshots of each screen."""
    folder = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts")) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
