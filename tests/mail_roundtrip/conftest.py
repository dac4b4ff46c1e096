"""Real IMAP (Dovecot) and real SMTP (aiosmtpd) together, for whole conversations."""

from tests.mail_delivery.conftest import sink
from tests.mail_fetch.conftest import dovecot, dovecot_server, imap_account

__all__ = ["dovecot", "dovecot_server", "imap_account", "sink"]
