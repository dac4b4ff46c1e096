"""The RFC 5322 bytes of an outbox row (a reply to the customer, or an auto-acknowledgement), and
where to send them.

Every top-level header is built and folded here from validated parts; the stdlib only lays out
the MIME body. It never parses a value we give it, because it decodes encoded-words while it
parses: a subject holding the text `=?utf-8?q?a=0D=0ABcc:_x@y?=` came out as a real `Bcc:` header
(AC-16, corpus 608). A row is rendered once; the bytes go to the blob store and every retry sends
them again, with the same Message-ID (AC-15).
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.models import Agent
from keepdesk.blobs import BlobStore
from keepdesk.mail.addresses import format_address, is_valid_addr_spec, sanitize_header_value
from keepdesk.mail.mailboxes import smtp_server
from keepdesk.mail.models import Direction, Mailbox, MailMessage
from keepdesk.mail.servers import ServerUrl
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.tickets.filenames import safe_filename
from keepdesk.tickets.models import Attachment, Message, Ticket

# refold_source="none": header values set with `set_raw` go out exactly as folded here. With the
# default ("long") a line over 78 characters is re-parsed and re-folded, and the stdlib then
# turns a long Message-ID in References into RFC 2047 encoded-words, which breaks threading.
_POLICY = email.policy.SMTP.clone(refold_source="none")
_WIDTH = 78
# A msg-id we repeat in In-Reply-To/References: printable ASCII, no angle brackets or spaces
# inside, and no "=?" a careless parser could decode (RFC 5322 §3.6.4).
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,246}>")
_HEADER_WORD = re.compile(r"[\x21-\x7e]+")
_REPLY_PREFIX = re.compile(r"(?i)^re\s*:")
_SEVEN_BIT = re.compile(r"[\t\n\x20-\x7e]*")
MAX_REFERENCES = 20


class Unsendable(Exception):
    """The row cannot become a mail at all (no ticket, a bad address): it fails."""


class NotYetSendable(Exception):
    """Nothing to send from yet (no mailbox): kept and retried, so adding one delivers it."""


@dataclass(frozen=True)
class Rendered:
    data: bytes
    envelope_from: str
    recipients: list[str]
    server: ServerUrl


@dataclass(frozen=True)
class _File:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class _Letter:
    """Everything the mail says, loaded from the database and validated."""

    headers: list[tuple[str, str]]
    text: str
    html: str | None
    files: list[_File]


async def render(
    session: AsyncSession,
    *,
    row: OutboxMessage,
    secret: bytes,
    blobs: BlobStore,
    now: datetime,
) -> Rendered:
    """The row's mail and its SMTP server. The first call builds the bytes, stores them, records
    the outbound `MailMessage` and sets `row.blob_key`; later calls load the same bytes.

    Raises `Unsendable` (before writing anything) for a row no retry can fix. Flushes; the caller
    commits.
    """
    if row.kind not in (OutboxKind.reply, OutboxKind.auto_ack):
        raise Unsendable(f"keepdesk cannot write {row.kind.value} mail yet")
    ticket = await session.get(Ticket, row.ticket_id) if row.ticket_id is not None else None
    if ticket is None:
        raise Unsendable("the ticket of this mail no longer exists")
    mailbox = await _sending_mailbox(session, row, ticket)
    server = smtp_server(mailbox, secret)
    recipients = _recipients(row.recipients)
    if row.blob_key is not None and await asyncio.to_thread(blobs.exists, row.blob_key):
        data = await asyncio.to_thread(blobs.get, row.blob_key)
        return Rendered(data, row.envelope_from or mailbox.address, recipients, server)

    message = await _ticket_message(session, row)
    chain = await _chain(session, ticket, before=row.ticket_message_id)
    inbound = [mail_id for mail_id, direction in chain if direction == Direction.inbound]
    in_reply_to = inbound[-1] if inbound else None
    references = [mail_id for mail_id, _ in chain]
    if len(references) > MAX_REFERENCES:
        # The root keeps the thread together in every client; the newest ids keep it in order.
        references = references[:1] + references[-(MAX_REFERENCES - 1) :]
    from_name = await _from_name(session, mailbox, message)
    if not _MSG_ID.fullmatch(row.message_id_header):
        raise Unsendable(f"the stored Message-ID {row.message_id_header!r} is not usable")
    headers = [
        ("From", _folded("From", _from_header(from_name, mailbox.address).split(" "))),
        ("To", _folded("To", [f"{address}," for address in recipients[:-1]] + recipients[-1:])),
        ("Subject", _folded("Subject", subject_words(ticket.subject, ticket.number))),
        ("Date", email.utils.format_datetime(now.astimezone(UTC))),
        ("Message-ID", _folded("Message-ID", [row.message_id_header])),
    ]
    if in_reply_to is not None:
        headers.append(("In-Reply-To", _folded("In-Reply-To", [in_reply_to])))
    if references:
        headers.append(("References", _folded("References", references)))
    if row.kind == OutboxKind.auto_ack:
        # RFC 3834 §5: marks the mail automatic, so well-behaved responders never answer it.
        headers.append(("Auto-Submitted", "auto-replied"))
        headers.append(("X-Loop", mailbox.address))
    headers.append(("X-Keepdesk-Ticket", str(ticket.number)))

    if message is None:
        text, html, files = _acknowledgement(ticket), None, []
    else:
        text, html = message.body_text, message.body_html
        files = await _files(session, blobs, message.id)
    letter = _Letter(headers=headers, text=text, html=html, files=files)
    data = await asyncio.to_thread(_build, letter)
    row.blob_key = await asyncio.to_thread(blobs.put, data)
    row.envelope_from = mailbox.address
    row.mailbox_id = mailbox.id
    if message is not None:
        await _record_outbound(
            session,
            row=row,
            ticket=ticket,
            mailbox=mailbox,
            from_name=from_name,
            in_reply_to=in_reply_to,
            references=references,
        )
    await session.flush()
    return Rendered(data, mailbox.address, recipients, server)


# --- what goes into the mail ------------------------------------------------------------------


async def _sending_mailbox(session: AsyncSession, row: OutboxMessage, ticket: Ticket) -> Mailbox:
    """The row's own mailbox (set when it was enqueued or first rendered), else the ticket's,
    else its team's, else the first one; only active mailboxes send."""
    for mailbox_id in (row.mailbox_id, ticket.mailbox_id):
        if mailbox_id is not None:
            mailbox = await session.get(Mailbox, mailbox_id)
            if mailbox is not None and mailbox.is_active:
                return mailbox
    active = select(Mailbox).where(Mailbox.is_active.is_(True)).order_by(Mailbox.id).limit(1)
    if ticket.team_id is not None:
        mailbox = await session.scalar(active.where(Mailbox.team_id == ticket.team_id))
        if mailbox is not None:
            return mailbox
    mailbox = await session.scalar(active)
    if mailbox is None:
        raise NotYetSendable("no mailbox to send from: add one with keepdesk mailbox add")
    return mailbox


def _recipients(addresses: Sequence[str]) -> list[str]:
    if not addresses:
        raise Unsendable("the mail has no recipient")
    for address in addresses:
        if not is_valid_addr_spec(address):
            raise Unsendable(f"{sanitize_header_value(address)[:100]!r} is not a valid address")
    return list(addresses)


async def _ticket_message(session: AsyncSession, row: OutboxMessage) -> Message | None:
    if row.ticket_message_id is None:
        if row.kind == OutboxKind.reply:
            raise Unsendable("the reply this mail carries no longer exists")
        return None
    message = await session.get(Message, row.ticket_message_id)
    if message is None:
        raise Unsendable("the reply this mail carries no longer exists")
    return message


async def _chain(
    session: AsyncSession, ticket: Ticket, *, before: int | None
) -> list[tuple[str, Direction]]:
    """The ticket's Message-IDs, oldest first, up to (not including) the message being sent."""
    query = (
        select(MailMessage.header_message_id, MailMessage.direction)
        .where(MailMessage.ticket_id == ticket.id)
        .order_by(MailMessage.message_id)
    )
    if before is not None:
        query = query.where(MailMessage.message_id < before)
    seen: dict[str, Direction] = {}
    for header_id, direction in await session.execute(query):
        # An inbound id is whatever the sender wrote; one we cannot repeat safely is left out.
        if _MSG_ID.fullmatch(header_id or ""):
            seen.setdefault(header_id, direction)
    return list(seen.items())


async def _from_name(session: AsyncSession, mailbox: Mailbox, message: Message | None) -> str:
    agent = None
    if message is not None and message.author_agent_id is not None:
        agent = await session.get(Agent, message.author_agent_id)
    if agent is None:
        return mailbox.display_name
    if not mailbox.display_name:
        return agent.name
    return f"{agent.name} via {mailbox.display_name}"


def _from_header(name: str, address: str) -> str:
    try:
        return format_address(sanitize_header_value(name), address)
    except ValueError:
        raise Unsendable(f"the mailbox address {address!r} is not a valid address") from None


def subject_words(subject: str, number: int) -> list[str]:
    """`Re: <subject> [#number]` as header words: no second `Re:`, no second tag."""
    text = sanitize_header_value(subject)
    tag = f"[#{number}]"
    prefix = [] if _REPLY_PREFIX.match(text) else ["Re:"]
    suffix = [] if tag in text else [tag]
    words = text.split(" ") if text else []
    # "=?" in plain text would be decoded by the reader's client; a very long word cannot be
    # folded. Both are sent as encoded-words, which decode back to exactly this text.
    if not text.isascii() or "=?" in text or any(len(w) > _WIDTH - 10 for w in words):
        words = _encoded_words(text)
    return prefix + words + suffix


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded UTF-8 words, never splitting a character. RFC 2047 allows 75
    characters; 68 keeps even the first line, after `Subject: `, under 78."""
    chunks: list[str] = []
    chunk = ""
    for char in text:
        if len(base64.b64encode((chunk + char).encode())) + len("=?utf-8?b??=") > 68:
            chunks.append(chunk)
            chunk = char
        else:
            chunk += char
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c.encode()).decode('ascii')}?=" for c in chunks]


def _folded(name: str, words: Sequence[str]) -> str:
    """A header value folded at the spaces between `words`, lines kept under 78 characters
    where a word allows. Every word is printable ASCII, so no CR, LF or NUL can get in."""
    lines: list[str] = []
    line = ""
    width = len(name) + 2
    for word in words:
        if not _HEADER_WORD.fullmatch(word):
            raise Unsendable(f"keepdesk refused to write unsafe text into the {name} header")
        if line and width + len(line) + 1 + len(word) > _WIDTH:
            lines.append(line)
            line, width = " " + word, 0
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def _acknowledgement(ticket: Ticket) -> str:
    subject = sanitize_header_value(ticket.subject)
    return (
        "Hello,\n\n"
        f"we have received your message and opened ticket #{ticket.number}: {subject}\n\n"
        "To add to it, reply to this mail and keep the ticket number in the subject.\n\n"
        "This message was sent automatically.\n"
    )


async def _files(session: AsyncSession, blobs: BlobStore, message_id: int) -> list[_File]:
    rows = await session.execute(
        select(Attachment.filename, Attachment.content_type, Attachment.blob_key)
        .where(Attachment.message_id == message_id)
        .order_by(Attachment.id)
    )
    files: list[_File] = []
    for index, (filename, content_type, blob_key) in enumerate(rows, start=1):
        if not await asyncio.to_thread(blobs.exists, blob_key):
            raise Unsendable(f"the attachment {filename!r} is missing from the blob store")
        data = await asyncio.to_thread(blobs.get, blob_key)
        files.append(_File(safe_filename(filename, index), content_type, data))
    return files


async def _record_outbound(
    session: AsyncSession,
    *,
    row: OutboxMessage,
    ticket: Ticket,
    mailbox: Mailbox,
    from_name: str,
    in_reply_to: str | None,
    references: list[str],
) -> None:
    """The reply's mail facts, so the customer's answer to it threads back (AC-10)."""
    assert row.ticket_message_id is not None
    existing = await session.scalar(
        select(MailMessage).where(MailMessage.message_id == row.ticket_message_id)
    )
    if existing is not None:
        # Rendered before, and the blob has gone since: keep the facts, point at the new bytes.
        existing.raw_blob_key = row.blob_key
        return
    session.add(
        MailMessage(
            message_id=row.ticket_message_id,
            ticket_id=ticket.id,
            mailbox_id=mailbox.id,
            direction=Direction.outbound,
            header_message_id=row.message_id_header,
            in_reply_to=in_reply_to,
            references=references,
            from_address=mailbox.address,
            from_name=sanitize_header_value(from_name)[:200],
            sender_verified=True,
            thread_reason="keepdesk's reply",
            automation=None,
            raw_blob_key=row.blob_key,
            facts={},
        )
    )


# --- the bytes --------------------------------------------------------------------------------


def _transfer_encoding(text: str) -> str:
    if _SEVEN_BIT.fullmatch(text) and all(len(line) <= 998 for line in text.split("\n")):
        return "7bit"
    # Not every server takes 8BITMIME; quoted-printable passes anywhere, NUL and long lines too.
    return "quoted-printable"


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _build(letter: _Letter) -> bytes:
    msg = EmailMessage(policy=_POLICY)
    for name, value in letter.headers:
        msg.set_raw(name, value)
    text = _normalized(letter.text)
    msg.set_content(text, cte=_transfer_encoding(text))
    if letter.html is not None:
        html = _normalized(letter.html)
        msg.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    for file in letter.files:
        maintype, _, subtype = file.content_type.partition("/")
        if maintype in ("multipart", "message") or not subtype:
            # Those may not be base64-encoded (RFC 2046 §5); as opaque bytes they arrive intact.
            maintype, subtype = "application", "octet-stream"
        # The stdlib writes a non-ASCII name as RFC 2231 `filename*=utf-8''…`; the name was
        # made safe above, so it holds no path, control or bidi character (AC-19).
        msg.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.filename)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the stdlib repeats it in every part it adds
    return msg.as_bytes()
