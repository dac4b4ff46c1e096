"""Where a page may send the browser next: same-origin relative paths only (AC-22).

`next=` comes from a link anyone can craft. Browsers read `//host`, `/\\host` and, after
stripping tabs and newlines, `/\\t/host` as other sites, so only a plain `/path` that no
browser can read as another host is accepted; anything else falls back to a safe default.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# A path, a query and a fragment of printable ASCII; no backslash anywhere.
_SAFE = re.compile(r"^/(?![/\\])[!#-\[\]-~]*$")
MAX_LENGTH = 2000


def safe_next(value: str | None, *, default: str = "/") -> str:
    if not value or len(value) > MAX_LENGTH or not _SAFE.match(value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    return value
