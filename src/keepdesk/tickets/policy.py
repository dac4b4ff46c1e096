"""The limits ticket commands enforce: configurable ones (`TicketPolicy`) and tag rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from keepdesk.errors import InvalidInput
from keepdesk.runtime import Runtime

MAX_TAGS = 20
_TAG = re.compile(r"^[\w][\w.:/+-]{0,49}$")


@dataclass(frozen=True)
class TicketPolicy:
    """What ticket commands need to know from the configuration."""

    first_number: int = 1000
    max_attachment_bytes: int = 25 * 1024 * 1024
    # Signs the Message-IDs of outbound mail (see outbox.ids); the domain they carry.
    mail_secret: bytes = b""
    message_id_domain: str = "keepdesk.invalid"

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> TicketPolicy:
        s = runtime.settings
        return cls(
            first_number=s.tickets_first_number,
            max_attachment_bytes=s.tickets_max_attachment_bytes,
            mail_secret=runtime.secret,
            message_id_domain=urlsplit(s.server_base_url).hostname or "keepdesk.invalid",
        )


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
