"""Safe display names for attachments and the Content-Disposition that serves them.

The rule is the corpus MANIFEST's "safe name". Storage keys never come from a name: the blob
store keys by sha256, so a name only ever reaches a page (escaped) or a download header.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$", re.IGNORECASE)
MAX_NAME_BYTES = 255


def safe_filename(name: str | None, index: int = 1) -> str:
    if not name:
        return f"attachment-{index}"
    base = re.split(r"[/\\]", name)[-1]
    base = unicodedata.normalize("NFC", base)
    base = _CONTROLS.sub("", base)
    base = base.lstrip(" ").rstrip(". ")
    if not base or base in (".", ".."):
        return f"attachment-{index}"
    if _RESERVED.match(base) or base.startswith("."):
        base = "_" + base
    return _truncate(base)


def _truncate(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 32:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    encoded = stem.encode()[:budget]
    return encoded.decode(errors="ignore").rstrip(". ") + suffix


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the RFC 5987 UTF-8 name (RFC 6266)."""
    fallback = (
        "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
        or "attachment"
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
