"""What the multi-instance story needs: the Dovecot of tests/mail_fetch and the SMTP sink of
tests/mail_delivery (imported, so they are defined once)."""

from tests.mail_delivery.conftest import sink
from tests.mail_fetch.conftest import dovecot, dovecot_server

__all__ = ["dovecot", "dovecot_server", "sink"]
