"""Mail server URLs: `imaps://user:pass@host:993/INBOX`, `smtp+starttls://user:pass@host:587`.

Each scheme names its security: implicit TLS (`imaps`, `smtps`), STARTTLS (`+starttls`), or
plain (`imap`, `smtp`), which is refused off loopback unless the mailbox explicitly allows it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote, urlsplit

from keepdesk.errors import InvalidInput


class Security(StrEnum):
    tls = "tls"
    starttls = "starttls"
    plain = "plain"


_SCHEMES = {
    "imap": {
        "imaps": (Security.tls, 993),
        "imap+starttls": (Security.starttls, 143),
        "imap": (Security.plain, 143),
    },
    "smtp": {
        "smtps": (Security.tls, 465),
        "smtp+starttls": (Security.starttls, 587),
        "smtp": (Security.plain, 25),
    },
}


@dataclass(frozen=True)
class ServerUrl:
    protocol: str  # "imap" or "smtp"
    security: Security
    host: str
    port: int
    username: str | None
    password: str | None
    folder: str = "INBOX"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def masked(self) -> str:
        """The URL without its password: safe for logs, pages and API answers."""
        scheme = next(k for k, v in _SCHEMES[self.protocol].items() if v[0] == self.security)
        user = f"{quote(self.username, safe='')}:***@" if self.username else ""
        folder = f"/{quote(self.folder)}" if self.protocol == "imap" else ""
        return f"{scheme}://{user}{self.host}:{self.port}{folder}"

    def unparsed(self) -> str:
        scheme = next(k for k, v in _SCHEMES[self.protocol].items() if v[0] == self.security)
        user = ""
        if self.username:
            user = quote(self.username, safe="")
            if self.password is not None:
                user += ":" + quote(self.password, safe="")
            user += "@"
        folder = f"/{quote(self.folder)}" if self.protocol == "imap" else ""
        return f"{scheme}://{user}{self.host}:{self.port}{folder}"


def parse_server_url(url: str, *, protocol: str, allow_plaintext: bool = False) -> ServerUrl:
    what = protocol.upper()
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise InvalidInput(f"the {what} URL is not valid", code="invalid_server_url") from None
    schemes = _SCHEMES[protocol]
    if parts.scheme not in schemes:
        raise InvalidInput(
            f"the {what} URL must start with one of {', '.join(f'{s}://' for s in schemes)}",
            code="invalid_server_url",
        )
    if not parts.hostname:
        raise InvalidInput(f"the {what} URL has no host", code="invalid_server_url")
    security, default_port = schemes[parts.scheme]
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    server = ServerUrl(
        protocol=protocol,
        security=security,
        host=parts.hostname,
        port=port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        folder=folder,
    )
    if security == Security.plain and not server.is_loopback and not allow_plaintext:
        raise InvalidInput(
            f"{parts.scheme}:// sends the password unencrypted to {server.host}; use "
            f"{'imaps' if protocol == 'imap' else 'smtps'}:// or the +starttls scheme, or "
            "allow plaintext explicitly for this mailbox",
            code="plaintext_refused",
        )
    return server
