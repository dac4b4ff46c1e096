"""The "test connection" of a mailbox: can keepdesk sign in to its IMAP folder and open a mail
session with its SMTP server right now? Nothing is fetched, moved or sent, and no answer ever
carries the password (a server may echo what it was given in an error)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor, require_admin
from keepdesk.errors import InvalidInput
from keepdesk.mail import smtp
from keepdesk.mail.imap import ImapClient, ImapError
from keepdesk.mail.mailboxes import get_mailbox, imap_server, smtp_server
from keepdesk.mail.servers import ServerUrl
from keepdesk.secretbox import SecretUnreadable

# Long enough for a slow server's greeting and TLS, short enough for a person to wait for.
CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    protocol: str  # "IMAP" or "SMTP"
    target: str  # the masked URL
    is_ok: bool
    detail: str


@dataclass(frozen=True)
class ConnectionReport:
    mailbox_id: int
    checks: list[Check]

    @property
    def is_ok(self) -> bool:
        return all(check.is_ok for check in self.checks)


def _scrub(text: str, server: ServerUrl) -> str:
    if server.password:
        text = text.replace(server.password, "***")
    return text


async def _check_imap(server: ServerUrl, timeout: float) -> Check:  # noqa: ASYNC109
    try:
        async with ImapClient(server, timeout=timeout) as client:
            uidvalidity = await client.select(server.folder)
            capabilities = " ".join(sorted(client.capabilities))
    except ImapError as exc:
        return Check("IMAP", server.masked(), False, _scrub(str(exc), server))
    detail = (
        f"signed in; folder {server.folder} has UIDVALIDITY {uidvalidity}; "
        f"capabilities: {capabilities or 'none'}"
    )
    return Check("IMAP", server.masked(), True, _scrub(detail, server))


async def _check_smtp(server: ServerUrl, timeout: float) -> Check:  # noqa: ASYNC109
    is_ok, detail = await smtp.check_connection(server, timeout=timeout)
    return Check("SMTP", server.masked(), is_ok, _scrub(detail, server))


async def servers_to_check(
    session: AsyncSession, *, actor: Actor, mailbox_id: int, secret: bytes
) -> tuple[int, ServerUrl, ServerUrl]:
    """The mailbox's IMAP and SMTP servers. The caller ends its transaction before checking
    them: a slow server must not hold the database (on SQLite, the write lock) meanwhile."""
    require_admin(actor)
    mailbox = await get_mailbox(session, mailbox_id)
    try:
        return mailbox.id, imap_server(mailbox, secret), smtp_server(mailbox, secret)
    except (SecretUnreadable, ValueError) as exc:
        raise InvalidInput(
            f"the mailbox's server URLs cannot be read: {exc}", code="secret_unreadable"
        ) from None


async def check_servers(
    mailbox_id: int,
    imap: ServerUrl,
    outgoing: ServerUrl,
    *,
    timeout: float = CHECK_TIMEOUT,  # noqa: ASYNC109 - a bound for each server, not the call
) -> ConnectionReport:
    return ConnectionReport(
        mailbox_id=mailbox_id,
        checks=[await _check_imap(imap, timeout), await _check_smtp(outgoing, timeout)],
    )
