"""Opaque keyset cursors shared by every list: a page ends where the next one starts, no OFFSET."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from keepdesk.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, kind: str, size: int) -> list[Any]:
    """The values a cursor was made from; `kind` (its first value) guards against mixing lists."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeError):
        values = None
    if not isinstance(values, list) or len(values) != size or values[0] != kind:
        raise InvalidInput("cursor is not valid for this list", code="invalid_cursor")
    return values
