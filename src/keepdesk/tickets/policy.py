"""The limits ticket commands enforce: configurable ones (`TicketPolicy`) and tag rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from keepdesk.errors import InvalidInput

MAX_TAGS = 20
_TAG = re.compile(r"^[\w][\w.:/+-]{0,49}$")


@dataclass(frozen=True)
class TicketPolicy:
    """The configurable limits ticket commands enforce."""

    first_number: int = 1000
    max_attachment_bytes: int = 25 * 1024 * 1024


def normalize_tags(tags: Iterable[str]) -> list[str]:
    clean: list[str] = []
    for raw in tags:
        tag = "-".join(raw.strip().lower().split())
        if not _TAG.match(tag):
            raise InvalidInput(
                f"tag {raw[:60]!r} is not valid: use 1-50 letters, digits and . : / + - _",
                code="invalid_tag",
            )
        if tag not in clean:
            clean.append(tag)
    if len(clean) > MAX_TAGS:
        raise InvalidInput(f"a ticket can have at most {MAX_TAGS} tags", code="too_many_tags")
    return sorted(clean)
