"""The one error tree of keepdesk; `app.py` maps it to HTTP and the CLI to one line.

KeepdeskError
├── NotFound          404  it does not exist, or the actor may not see it
├── InvalidInput      422  the request is well-formed but its values are not acceptable
├── Unauthenticated   401  no valid credentials
├── PermissionDenied  403  the actor is known but may not do this (never for hidden objects)
├── Conflict          409  changed since the caller read it, or its state forbids it
├── RateLimited       429  too many attempts; retry_after says when to try again
└── Unavailable       503  a dependency (database, mail server) is down
"""

from __future__ import annotations

from typing import Any


class KeepdeskError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class NotFound(KeepdeskError):
    code = "not_found"


class InvalidInput(KeepdeskError):
    code = "invalid_input"


class Unauthenticated(KeepdeskError):
    code = "unauthenticated"


class PermissionDenied(KeepdeskError):
    code = "permission_denied"


class Conflict(KeepdeskError):
    code = "conflict"


class RateLimited(KeepdeskError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(KeepdeskError):
    code = "unavailable"


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line that names it."""
