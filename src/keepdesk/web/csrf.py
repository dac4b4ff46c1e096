"""Cross-site request forgery: per-session tokens, and the same-origin check of the browser.

A state-changing request from a page must carry a token (form field `csrf_token` or header
`X-CSRF-Token`, which `<body hx-headers>` adds to every HTMX request) that is an HMAC of the
session's own token with the instance secret: another site can neither read nor compute it.
On top of that, the browser's own word on where the request came from must be this site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.datastructures import Headers

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_for(secret: bytes, session_token: str, *, purpose: str = "session") -> str:
    """The CSRF token of one browser session (or of a signed-out browser's pre-session)."""
    digest = hmac.new(secret, f"csrf:{purpose}:{session_token}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def tokens_match(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_origin_reason(headers: Headers, *, allowed_origins: Collection[str]) -> str | None:
    """Why the browser says this request did not come from our own pages, or None.

    `Sec-Fetch-Site` first: our pages send `Referrer-Policy: no-referrer`, under which browsers
    send `Origin: null` on same-origin POSTs, while Fetch Metadata is unaffected. Without it,
    `Origin`, then `Referer`. A client that sends none of them is not a browser a forged page
    could drive, and the token alone decides.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        # "none": the person made the request themselves (typed URL, bookmark), not a page.
        if site in ("same-origin", "none"):
            return None
        return f"the request came from another site (Sec-Fetch-Site: {site[:20]})"
    origin = headers.get("origin")
    if origin is not None:
        if origin.lower() in allowed_origins:
            return None
        return f"the request came from another origin ({origin[:100]})"
    referer = headers.get("referer")
    if referer is not None:
        if origin_of(referer) in allowed_origins:
            return None
        return "the request came from another site (Referer)"
    return None
