"""Fixtures for the admin pages: the signed-in page clients of tests/web, and the real IMAP and
SMTP servers of the mail tests for "test connection"."""

from __future__ import annotations

from tests.mail_delivery.conftest import sink
from tests.mail_fetch.conftest import dovecot, dovecot_server, imap_account
from tests.web.conftest import pages

__all__ = ["dovecot", "dovecot_server", "imap_account", "pages", "sink"]
