"""Importing an old shared inbox (mbox or Maildir) through the same ingest pipeline.

Each mail keeps its own date; nothing is acknowledged; mail the support address sent becomes
the replies of its threads. Running it twice adds nothing: every mail is recognised as a
re-delivery (same Message-ID and body). Threads quiet for longer than `close_older_than` end
up closed, so years of history do not flood the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox as stdlib_mailbox
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from keepdesk.errors import InvalidInput
from keepdesk.mail import ingest as ingesting
from keepdesk.mail.mailboxes import find_mailbox
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as tickets
from keepdesk.tickets.models import Message


@dataclass
class ImportSummary:
    total: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    tickets_touched: set[int] = field(default_factory=set)
    closed: int = 0


def read_messages(kind: str, path: Path) -> tuple[int, Generator[bytes, None, None]]:
    """The count and the raw bytes of each message, oldest file order first."""
    if kind == "mbox":
        if not path.is_file():
            raise InvalidInput(f"{path} is not an mbox file", code="not_found")
        box: stdlib_mailbox.Mailbox[stdlib_mailbox.Message] = stdlib_mailbox.mbox(
            path, create=False
        )
    elif kind == "maildir":
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise InvalidInput(f"{path} is not a Maildir (no cur/ or new/)", code="not_found")
        box = stdlib_mailbox.Maildir(path, factory=None, create=False)
    else:
        raise InvalidInput("the kind must be mbox or maildir", code="invalid_kind")
    keys = sorted(box.keys()) if kind == "maildir" else list(box.keys())

    def messages() -> Generator[bytes, None, None]:
        try:
            for key in keys:
                # get_bytes gives the stored bytes; nothing is re-serialised (AC-9).
                yield box.get_bytes(key)
        finally:
            box.close()

    return len(keys), messages()


async def _import_all(
    runtime: Runtime,
    messages: Iterator[bytes],
    mailbox_address: str,
    total: int,
    summary: ImportSummary,
    progress: Callable[[int, int], None] | None,
) -> None:
    for index, raw in enumerate(messages, start=1):
        blob_key = await asyncio.to_thread(runtime.blobs.put, raw)
        async with runtime.db.session(write=True) as session:
            box = await find_mailbox(session, mailbox_address)
            result = await ingesting.ingest(
                session,
                runtime=runtime,
                mailbox=box,
                raw=raw,
                blob_key=blob_key,
                now=runtime.clock.now(),
                historic=True,
            )
            if result.message_id is not None:
                ticket_id = await session.scalar(
                    select(Message.ticket_id).where(Message.id == result.message_id)
                )
                if ticket_id is not None:
                    summary.tickets_touched.add(ticket_id)
            await session.commit()
        key = result.outcome.value
        summary.outcomes[key] = summary.outcomes.get(key, 0) + 1
        if progress is not None:
            progress(index, total)


async def import_messages(
    runtime: Runtime,
    *,
    kind: str,
    path: Path,
    mailbox_address: str,
    close_older_than: timedelta | None = timedelta(days=14),
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    async with runtime.db.session() as session:
        box = await find_mailbox(session, mailbox_address)
        if box is None:
            raise InvalidInput(
                f"no mailbox {mailbox_address}: add it with 'keepdesk mailbox add'",
                code="unknown_mailbox",
            )
    total, messages = read_messages(kind, path)
    summary = ImportSummary(total=total)
    with contextlib.closing(messages):
        await _import_all(runtime, messages, mailbox_address, total, summary, progress)
    if close_older_than is not None and summary.tickets_touched:
        async with runtime.db.session(write=True) as session:
            now = runtime.clock.now()
            summary.closed = await tickets.close_quietly(
                session,
                ticket_ids=sorted(summary.tickets_touched),
                last_activity_before=now - close_older_than,
                now=now,
            )
            await session.commit()
    return summary
