"""The search tests use the signed-in page agents of the web tests."""

from tests.web.conftest import pages

__all__ = ["pages"]
