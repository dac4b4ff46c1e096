"""Whether the browser tests can run here at all: Playwright from PyPI, Chromium from apt."""

from __future__ import annotations

from tests.e2e.conftest import (
    CHROMIUM,
    CHROMIUM_MISSING,
    HAVE_PLAYWRIGHT,
    PLAYWRIGHT_MISSING,
)
from tests.support.services import missing


def test_playwright_and_chromium_are_installed() -> None:
    if not HAVE_PLAYWRIGHT:
        missing(PLAYWRIGHT_MISSING)
    if not CHROMIUM.exists():
        missing(CHROMIUM_MISSING)
