"""Storing attachments: blob first (fsynced), then the row; names made safe, types checked."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.blobs import BlobStore
from keepdesk.errors import InvalidInput
from keepdesk.tickets.filenames import safe_filename
from keepdesk.tickets.models import Attachment, Message
from keepdesk.tickets.policy import TicketPolicy

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$")


@dataclass(frozen=True)
class NewAttachment:
    filename: str | None
    content_type: str
    data: bytes
    content_id: str | None = None
    is_inline: bool = False


async def store_attachments(
    session: AsyncSession,
    *,
    blobs: BlobStore,
    message: Message,
    attachments: Sequence[NewAttachment],
    policy: TicketPolicy,
    now: datetime,
) -> None:
    for index, item in enumerate(attachments, start=1):
        if len(item.data) > policy.max_attachment_bytes:
            raise InvalidInput(
                f"attachment {index} is larger than {policy.max_attachment_bytes} bytes",
                code="attachment_too_large",
            )
    for index, item in enumerate(attachments, start=1):
        # The blob is on disk (fsynced) before the row that points at it can commit.
        key = await asyncio.to_thread(blobs.put, item.data)
        content_type = item.content_type.strip().lower()
        if not _CONTENT_TYPE.match(content_type):
            content_type = "application/octet-stream"
        session.add(
            Attachment(
                message_id=message.id,
                ticket_id=message.ticket_id,
                blob_key=key,
                filename=safe_filename(item.filename, index),
                content_type=content_type,
                size=len(item.data),
                content_id=item.content_id[:250] if item.content_id else None,
                is_inline=item.is_inline,
                created_at=now,
            )
        )
