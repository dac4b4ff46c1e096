"""Macro stories sign in through the pages (tests/web/conftest.py)."""

from tests.web.conftest import pages

__all__ = ["pages"]
