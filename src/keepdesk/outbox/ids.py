"""Message-IDs keepdesk issues: `<kd-1042-r-5f2a9c31d0.3b1e…@support.example.com>`.

The ticket number and kind are signed with an HMAC of the instance secret, so a reply quoting
one proves it answers mail we sent, and nobody can forge one for a ticket they never saw.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_ISSUED = re.compile(
    r"^<?kd-(?P<number>\d{1,10})-(?P<kind>[a-z])-(?P<nonce>[0-9a-f]{10})\.(?P<mac>[0-9a-f]{20})@"
    r"(?P<domain>[^>\s]+)>?$"
)

KINDS = {"reply": "r", "auto_ack": "a", "notification": "n"}


@dataclass(frozen=True)
class IssuedId:
    number: int
    kind: str


def _mac(secret: bytes, number: int, kind: str, nonce: str) -> str:
    message = f"{number}:{kind}:{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:20]


def issue(secret: bytes, *, number: int, kind: str, domain: str) -> str:
    letter = KINDS[kind]
    nonce = secrets.token_hex(5)
    return f"<kd-{number}-{letter}-{nonce}.{_mac(secret, number, letter, nonce)}@{domain}>"


def verify(secret: bytes, message_id: str) -> IssuedId | None:
    """The ticket number an issued Message-ID names, or None when it is not ours or forged."""
    match = _ISSUED.match(message_id.strip())
    if match is None:
        return None
    number, letter, nonce = int(match["number"]), match["kind"], match["nonce"]
    if not hmac.compare_digest(match["mac"], _mac(secret, number, letter, nonce)):
        return None
    kind = next((k for k, v in KINDS.items() if v == letter), None)
    return IssuedId(number=number, kind=kind) if kind else None
