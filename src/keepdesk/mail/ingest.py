"""Turning one raw mail into a ticket, a message on a ticket, or a quarantine record.

`ingest` runs inside the caller's transaction and only flushes; the caller commits and only
then touches the IMAP server (AC-1). The raw bytes are already in the blob store when it runs,
and are never re-serialised (AC-9). Re-ingesting the same UID is a no-op; a byte-identical
re-delivery (same Message-ID, same body) is recorded as a duplicate and creates nothing (AC-5).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import Contact
from keepdesk.errors import InvalidInput
from keepdesk.mail import parsers, threading
from keepdesk.mail.authresults import dmarc_result
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.loops import AutomationReason
from keepdesk.mail.mailboxes import own_addresses
from keepdesk.mail.models import (
    Direction,
    Mailbox,
    MailMessage,
    MailReceipt,
    QuarantinedMail,
    QuarantineStatus,
    ReceiptOutcome,
)
from keepdesk.mail.parsing import ParsedMail, Rejected, parse_mail
from keepdesk.outbox import ids
from keepdesk.outbox import service as outbox
from keepdesk.outbox.models import OutboxKind
from keepdesk.runtime import Runtime
from keepdesk.tickets import history
from keepdesk.tickets import service as tickets
from keepdesk.tickets.attachments import NewAttachment
from keepdesk.tickets.models import Channel, EventAction, Message, MessageKind, Ticket
from keepdesk.tickets.policy import TicketPolicy

log = logging.getLogger("keepdesk.mail.ingest")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
AUTO_ACK_EVERY = timedelta(hours=24)
MAX_BODY_CHARS = 2_000_000
# The API's limit too (RFC 5322's line length). A longer subject is cut with an ellipsis; the
# raw mail keeps it whole (corpus 602: a 52 KB subject).
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True)
class Ingested:
    outcome: ReceiptOutcome
    reason: str
    ticket_number: int | None = None
    message_id: int | None = None
    quarantine_id: int | None = None
    is_new: bool = False
    # False when the UID had a receipt already: nothing was recorded, nothing counted.
    recorded: bool = True


def limits_for(runtime: Runtime) -> MailLimits:
    s = runtime.settings
    return MailLimits(
        max_bytes=s.mail_max_message_bytes,
        max_headers=s.mail_max_headers,
        max_header_bytes=s.mail_max_header_bytes,
        max_depth=s.mail_max_depth,
        max_parts=s.mail_max_parts,
        max_cpu_seconds=s.mail_max_cpu_seconds,
    )


def body_sha256(raw: bytes) -> str:
    """The hash of everything after the header block: what stays the same across MX hops."""
    match = _HEADER_END.search(raw)
    return hashlib.sha256(raw[match.end() :] if match else b"").hexdigest()


def synthetic_message_id(
    mailbox_id: int | None, uidvalidity: int | None, uid: int | None, content_sha: str
) -> str:
    # Deterministic, so fetching the same mail again finds it again (corpus 308).
    seed = f"{mailbox_id}:{uidvalidity}:{uid}:{content_sha}".encode()
    return f"<synthetic-{hashlib.sha256(seed).hexdigest()[:32]}@keepdesk.invalid>"


def new_receipt(
    *,
    mailbox_id: int | None,
    uidvalidity: int | None,
    uid: int | None,
    raw: bytes,
    now: datetime,
    outcome: ReceiptOutcome,
    content_sha: str | None = None,
    quarantine_id: int | None = None,
) -> MailReceipt:
    """The receipt of one fetched or imported mail, its server action still to do;
    `content_sha` when the caller has hashed the raw bytes already."""
    return MailReceipt(
        mailbox_id=mailbox_id,
        uidvalidity=uidvalidity,
        uid=uid,
        content_sha256=content_sha or hashlib.sha256(raw).hexdigest(),
        body_sha256=body_sha256(raw),
        size=len(raw),
        created_at=now,
        imap_done=False,
        outcome=outcome,
        quarantine_id=quarantine_id,
    )


@dataclass
class Seen:
    """What the mails of one batch look up (`look_up`), read for all of them at once before the
    first is recorded, then kept current as each is recorded, so a mail twice in one batch is
    still caught, and a reply to a mail of the same batch threads onto its ticket. Each
    look-up a mail cost a statement: 0.2-0.3 ms of ORM work, and a round trip on PostgreSQL."""

    receipts: dict[int, MailReceipt]  # by UID: receipts committed already
    contacts: dict[str, Contact]  # by address: the senders who are contacts already
    # (Message-ID, body hash) pairs asked about, and those of them ingested already.
    asked: set[tuple[str, str]] = field(default_factory=set)
    ingested: set[tuple[str, str]] = field(default_factory=set)
    # Message-IDs asked about (In-Reply-To, References), and the ticket of each that is a mail
    # on one.
    refs: set[str] = field(default_factory=set)
    threads: dict[str, Ticket] = field(default_factory=dict)
    # The contacts taking part in the tickets of `threads` as `look_up` found them, by ticket.
    participants: dict[int, set[str]] = field(default_factory=dict)
    # The batch's new receipts and mail records, written together at its end.
    unwritten: list[MailReceipt] = field(default_factory=list)
    mail_records: list[MailMessage] = field(default_factory=list)

    def keep(self, receipt: MailReceipt) -> None:
        self.unwritten.append(receipt)

    def keep_ingested(self, receipt: MailReceipt, record: MailMessage, ticket: Ticket) -> None:
        """An ingested mail's receipt and mail record, written at the batch's end: meanwhile
        a re-delivery of it is a duplicate, and a mail that answers it finds its ticket."""
        self.keep(receipt)
        self.mail_records.append(record)
        self.threads.setdefault(record.header_message_id, ticket)
        key = (record.header_message_id, receipt.body_sha256)
        self.asked.add(key)
        self.ingested.add(key)

    async def ingested_before(
        self, session: AsyncSession, pairs: Collection[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which of these (Message-ID, body hash) pairs were ingested already, the batch's own
        mails included; pairs not asked about before are read now (one statement)."""
        missing = {pair for pair in pairs if pair not in self.asked}
        if missing:
            self.ingested |= await _ingested_among(session, missing)
            self.asked |= missing
        return self.ingested & set(pairs)

    async def threads_for(self, session: AsyncSession, refs: Collection[str]) -> dict[str, Ticket]:
        """The tickets of these Message-IDs that are mails on one, the batch's own included;
        Message-IDs not asked about before are read now (one statement)."""
        missing = {ref for ref in refs if ref not in self.refs}
        if missing:
            for ref, ticket in (await threading.tickets_of_mails(session, missing)).items():
                self.threads.setdefault(ref, ticket)
            self.refs.update(missing)
        return self.threads


@asynccontextmanager
async def recording_batch(
    session: AsyncSession,
    *,
    mailbox_id: int,
    uidvalidity: int,
    mails: Sequence[tuple[int, bytes, ParsedMail | Rejected | None]],
) -> AsyncIterator[Seen]:
    """One transaction's batch of (UID, raw bytes, parse) of one mailbox, each mail recorded
    inside with `ingest(..., seen=...)`: what they look up is read at the start, five
    statements (`look_up`); their history events, search index, receipts and mail records are
    written at the end, a statement each (`tickets.batched_writes`)."""
    seen = await look_up(session, mailbox_id=mailbox_id, uidvalidity=uidvalidity, mails=mails)
    async with tickets.batched_writes(session, new_tickets=len(mails)):
        yield seen
    session.add_all(seen.mail_records)
    session.add_all(seen.unwritten)


async def look_up(
    session: AsyncSession,
    *,
    mailbox_id: int,
    uidvalidity: int,
    mails: Sequence[tuple[int, bytes, ParsedMail | Rejected | None]],
) -> Seen:
    """`Seen` for a batch of (UID, raw bytes, parse) of one mailbox: five statements."""
    uids = [uid for uid, _, _ in mails]
    found = await session.scalars(
        select(MailReceipt).where(
            MailReceipt.mailbox_id == mailbox_id,
            MailReceipt.uidvalidity == uidvalidity,
            MailReceipt.uid.in_(uids),
        )
    )
    parsed = [(uid, raw, p) for uid, raw, p in mails if isinstance(p, ParsedMail)]
    senders = [p.sender.address for _, _, p in parsed if p.sender.address]
    seen = Seen(
        receipts={r.uid: r for r in found if r.uid is not None},
        contacts=await accounts.contacts_by_email(session, senders),
    )
    await seen.ingested_before(
        session,
        [
            (header_message_id(p, mailbox_id, uidvalidity, uid, raw), body_sha256(raw))
            for uid, raw, p in parsed
        ],
    )
    threads = await seen.threads_for(
        session,
        [
            ref
            for _, _, p in parsed
            for ref in threading.references_newest_first(p.in_reply_to, p.references)
        ],
    )
    seen.participants = await threading.participants_of(session, list(threads.values()))
    return seen


def header_message_id(
    parsed: ParsedMail,
    mailbox_id: int | None,
    uidvalidity: int | None,
    uid: int | None,
    raw: bytes,
    content_sha: str | None = None,
) -> str:
    """The Message-ID a mail is known by: its own, or one made from where it came from."""
    if parsed.message_id:
        return parsed.message_id[:250]
    sha = content_sha or hashlib.sha256(raw).hexdigest()
    return synthetic_message_id(mailbox_id, uidvalidity, uid, sha)[:250]


async def find_receipt(
    session: AsyncSession, *, mailbox_id: int, uidvalidity: int, uid: int
) -> MailReceipt | None:
    return await session.scalar(
        select(MailReceipt).where(
            MailReceipt.mailbox_id == mailbox_id,
            MailReceipt.uidvalidity == uidvalidity,
            MailReceipt.uid == uid,
        )
    )


async def parse(
    runtime: Runtime, raw: bytes, *, own: frozenset[str], limits: MailLimits | None = None
) -> ParsedMail | Rejected:
    """The mail parsed under the CPU and size limits, in a worker process (`parsers`) or, with
    `mail_parse_processes` 0, a worker thread. The fetcher parses before its write transaction,
    so the database's one writer is not held for it."""
    limits = limits or limits_for(runtime)
    processes = runtime.settings.mail_parse_processes
    if processes:
        return await parsers.parse_in_worker(raw, limits=limits, own=own, processes=processes)
    return await asyncio.to_thread(parse_mail, raw, limits=limits, own_addresses=own)


async def quarantine(
    session: AsyncSession,
    *,
    mailbox: Mailbox | None,
    blob_key: str,
    size: int,
    reason: str,
    detail: str,
    now: datetime,
    uidvalidity: int | None = None,
    uid: int | None = None,
    subject: str = "",
    sender: str = "",
) -> QuarantinedMail:
    item = QuarantinedMail(
        mailbox_id=mailbox.id if mailbox else None,
        uidvalidity=uidvalidity,
        uid=uid,
        blob_key=blob_key,
        size=size,
        reason=reason[:64],
        detail=detail[:4000],
        subject=subject[:300],
        sender=sender[:320],
        status=QuarantineStatus.held,
        created_at=now,
    )
    session.add(item)
    if mailbox is not None:
        mailbox.quarantined_count += 1
    await session.flush()
    log.warning("quarantined mail (%s): %s", reason, detail[:200])
    return item


async def ingest(
    session: AsyncSession,
    *,
    runtime: Runtime,
    mailbox: Mailbox | None,
    raw: bytes,
    blob_key: str,
    now: datetime,
    uidvalidity: int | None = None,
    uid: int | None = None,
    limits: MailLimits | None = None,
    historic: bool = False,
    parsed: ParsedMail | Rejected | None = None,
    own: frozenset[str] | None = None,
    count: bool = True,
    seen: Seen | None = None,
) -> Ingested:
    """Ingest one mail. `historic` is for importing an old shared inbox: the mail keeps its own
    date, nothing is acknowledged, and mail the support address sent becomes the replies of
    the threads it belongs to. A caller that parsed the mail already (`parse`) passes `parsed`
    and the `own` addresses it parsed with; else both are read and done here. With `count`
    False the caller adds the recorded mails to the mailbox's fetched count itself (the
    fetcher, once a batch: one UPDATE of the mailbox row, not one a mail). A caller recording
    a batch passes what `look_up` found for it as `seen`."""
    if mailbox is not None and uidvalidity is not None and uid is not None:
        if seen is None:
            known = await find_receipt(
                session, mailbox_id=mailbox.id, uidvalidity=uidvalidity, uid=uid
            )
        else:
            known = seen.receipts.get(uid)
        if known is not None:
            return Ingested(known.outcome, "this UID was processed before", recorded=False)
    content_sha = hashlib.sha256(raw).hexdigest()
    ours = own if own is not None else await own_addresses(session)
    if parsed is None:
        parsed = await parse(runtime, raw, own=ours, limits=limits)
    receipt = new_receipt(
        mailbox_id=mailbox.id if mailbox else None,
        uidvalidity=uidvalidity,
        uid=uid,
        raw=raw,
        now=now,
        outcome=ReceiptOutcome.quarantined,
        content_sha=content_sha,
    )
    if mailbox is not None and count:
        mailbox.fetched_count += 1

    async def hold(reason: str, detail: str, subject: str = "", sender: str = "") -> Ingested:
        held = await session.scalar(
            select(QuarantinedMail.id)
            .where(
                QuarantinedMail.blob_key == blob_key,
                QuarantinedMail.status == QuarantineStatus.held,
            )
            .limit(1)
        )
        if held is not None and uid is None:
            # The same bytes are held already (an import run twice): one record is enough.
            return Ingested(ReceiptOutcome.duplicate, "already quarantined", quarantine_id=held)
        item = await quarantine(
            session,
            mailbox=mailbox,
            blob_key=blob_key,
            size=len(raw),
            reason=reason,
            detail=detail,
            now=now,
            uidvalidity=uidvalidity,
            uid=uid,
            subject=subject,
            sender=sender,
        )
        receipt.quarantine_id = item.id
        receipt.outcome = ReceiptOutcome.quarantined
        await _keep(session, receipt, seen)
        return Ingested(ReceiptOutcome.quarantined, detail, quarantine_id=item.id)

    if isinstance(parsed, Rejected):
        return await hold(parsed.reason, parsed.detail)

    receipt.header_message_id = header_message_id(
        parsed, receipt.mailbox_id, uidvalidity, uid, raw, content_sha
    )
    key = (receipt.header_message_id, receipt.body_sha256)
    if seen is None:
        duplicate = bool(await _ingested_among(session, {key}))
    else:
        duplicate = bool(await seen.ingested_before(session, [key]))
    if duplicate:
        receipt.outcome = ReceiptOutcome.duplicate
        await _keep(session, receipt, seen)
        return Ingested(ReceiptOutcome.duplicate, "a re-delivery of a mail already ingested")

    sender = parsed.sender
    automation = parsed.automation
    if historic and parsed.date is not None:
        now = min(parsed.date, now)
    if historic and sender.address is not None and sender.address in ours:
        thread = await threading.decide_for_reply(
            session,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            subject=parsed.subject,
            secret=runtime.secret,
            known=await _threads(session, seen, parsed),
        )
        if thread is not None:
            message = await tickets.record_sent_reply(
                session,
                ticket=thread,
                body=parsed.text_body[:MAX_BODY_CHARS] or "(empty)",
                body_html=parsed.html_body,
                now=now,
                blobs=runtime.blobs,
                policy=TicketPolicy.from_runtime(runtime),
                attachments=_attachments(parsed),
            )
            return await _finish(
                session,
                receipt,
                parsed,
                mailbox,
                message,
                thread,
                now,
                reason="a reply the support address sent (imported)",
                blob_key=blob_key,
                is_new=False,
                direction=Direction.outbound,
                seen=seen,
            )
    if AutomationReason.OWN_ADDRESS in automation.reasons or _is_our_own(parsed, runtime.secret):
        # Our own mail coming back (corpus 407): kept raw in the blob store, nothing created.
        receipt.outcome = ReceiptOutcome.loop
        await _keep(session, receipt, seen)
        return Ingested(ReceiptOutcome.loop, "keepdesk's own mail came back; nothing was created")

    if automation.bounce is not None:
        handled = await _record_bounce(session, parsed=parsed, runtime=runtime, now=now)
        if handled is None:
            return await hold(
                "unmatched_bounce",
                "a delivery report that names no mail keepdesk sent",
                parsed.subject,
                sender.address or "",
            )
        message, ticket = handled
        return await _finish(
            session,
            receipt,
            parsed,
            mailbox,
            message,
            ticket,
            now,
            reason="a delivery report about a reply on this ticket",
            blob_key=blob_key,
            is_new=False,
            seen=seen,
        )

    if not sender.is_verified or sender.address is None:
        problems = "; ".join(sender.problems) or "no usable sender address"
        return await hold(
            "unverified_sender",
            f"the From header cannot be trusted: {problems}",
            parsed.subject,
            sender.address or "",
        )

    try:
        contact = await accounts.find_or_create_contact(
            session,
            email=sender.address,
            name=sender.display_name,
            now=now,
            known=seen.contacts if seen is not None else None,
        )
    except InvalidInput as exc:
        return await hold("unverified_sender", exc.message, parsed.subject, sender.address)

    dmarc = dmarc_result(raw, runtime.settings.mail_authserv_id)
    sender_verified = dmarc in (None, "pass")
    decision = await threading.decide(
        session,
        sender=contact.email,
        subject=parsed.subject,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        secret=runtime.secret,
        known=await _threads(session, seen, parsed),
        known_participants=seen.participants if seen is not None else None,
    )
    policy = TicketPolicy.from_runtime(runtime)
    attachments = _attachments(parsed)
    body = parsed.text_body[:MAX_BODY_CHARS]
    if not body.strip() and not parsed.html_body and not attachments:
        body = "(empty message)"
    if decision.ticket is not None:
        ticket, message = await tickets.record_customer_message(
            session,
            ticket=decision.ticket,
            contact=contact,
            body=body,
            body_html=parsed.html_body,
            attachments=attachments,
            now=now,
            blobs=runtime.blobs,
            policy=policy,
            channel=Channel.email,
            automated=automation.is_automated,
        )
        is_new = ticket.id != decision.ticket.id
        if seen is not None and ticket.id in seen.participants:
            seen.participants[ticket.id].add(contact.email)
    else:
        ticket, message = await tickets.open_customer_ticket(
            session,
            requester=contact,
            subject=_shortened(parsed.subject),
            body=body,
            body_html=parsed.html_body,
            attachments=attachments,
            now=now,
            blobs=runtime.blobs,
            policy=policy,
            channel=Channel.email,
            team_id=mailbox.team_id if mailbox else None,
            mailbox_id=mailbox.id if mailbox else None,
            tags=["unverified-follow-up"] if decision.unverified_follow_up_of else (),
        )
        is_new = True
    reason = decision.reason
    if not sender_verified:
        reason += (
            f" The sender is NOT verified: our mail server recorded DMARC {dmarc} for it; treat"
            " requests in it (address changes, links, closing) with suspicion."
        )
    result = await _finish(
        session,
        receipt,
        parsed,
        mailbox,
        message,
        ticket,
        now,
        reason=reason,
        blob_key=blob_key,
        is_new=is_new,
        sender_verified=sender_verified,
        seen=seen,
    )
    if is_new and not decision.unverified_follow_up_of and not historic and sender_verified:
        await _maybe_auto_ack(
            session,
            parsed=parsed,
            mailbox=mailbox,
            ticket=ticket,
            recipient=contact.email,
            runtime=runtime,
            now=now,
            ours=ours,
        )
    return result


async def _threads(
    session: AsyncSession, seen: Seen | None, parsed: ParsedMail
) -> dict[str, Ticket] | None:
    if seen is None:
        return None  # threading reads them itself
    refs = threading.references_newest_first(parsed.in_reply_to, parsed.references)
    return await seen.threads_for(session, refs)


async def _keep(session: AsyncSession, receipt: MailReceipt, seen: Seen | None) -> None:
    """The mail's receipt, written now; in a batch, with the batch's others at its end (one
    INSERT for them all): `Seen` answers for it until then."""
    if seen is None:
        session.add(receipt)
        await session.flush()
    else:
        seen.keep(receipt)


async def _ingested_among(
    session: AsyncSession, pairs: Collection[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (Message-ID, body hash) pairs a mail ingested already had."""
    if not pairs:
        return set()
    rows = await session.execute(
        select(MailReceipt.header_message_id, MailReceipt.body_sha256).where(
            MailReceipt.header_message_id.in_(sorted({h for h, _ in pairs})),
            MailReceipt.outcome == ReceiptOutcome.ingested,
        )
    )
    return {(h, b) for h, b in rows if h is not None and (h, b) in pairs}


def _attachments(parsed: ParsedMail) -> list[NewAttachment]:
    return [
        NewAttachment(
            filename=a.filename,
            content_type=a.content_type,
            data=a.data,
            content_id=a.content_id,
            is_inline=a.is_inline,
        )
        for a in parsed.attachments
    ]


def _shortened(subject: str) -> str:
    subject = " ".join(subject.split())
    if len(subject) <= MAX_SUBJECT_CHARS:
        return subject
    return subject[: MAX_SUBJECT_CHARS - 1].rstrip() + "\u2026"


def _is_our_own(parsed: ParsedMail, secret: bytes) -> bool:
    return parsed.message_id is not None and ids.verify(secret, parsed.message_id) is not None


async def _finish(
    session: AsyncSession,
    receipt: MailReceipt,
    parsed: ParsedMail,
    mailbox: Mailbox | None,
    message: Message,
    ticket: Ticket,
    now: datetime,
    *,
    reason: str,
    blob_key: str,
    is_new: bool,
    direction: Direction = Direction.inbound,
    sender_verified: bool = True,
    seen: Seen | None = None,
) -> Ingested:
    damaged = [a.filename for a in parsed.attachments if a.is_possibly_damaged]
    record = MailMessage(
        message_id=message.id,
        ticket_id=ticket.id,
        mailbox_id=mailbox.id if mailbox else None,
        direction=direction,
        header_message_id=receipt.header_message_id or "",
        in_reply_to=parsed.in_reply_to[0][:250] if parsed.in_reply_to else None,
        references=parsed.references[-threading.MAX_REFERENCES :],
        from_address=parsed.sender.address or "",
        from_name=parsed.sender.display_name[:200],
        sender_verified=parsed.sender.is_verified and sender_verified,
        thread_reason=reason,
        automation=",".join(r.value for r in parsed.automation.reasons) or None,
        raw_blob_key=blob_key,
        facts={
            "defects": parsed.defects[:20],
            # Broken or cut-off transfer encoding: stored as decoded, marked (701, 704).
            "possibly_damaged": damaged[:20],
        },
    )
    receipt.outcome = ReceiptOutcome.ingested
    receipt.ticket_message_id = message.id
    if seen is None:
        session.add_all([record, receipt])
        await session.flush()
    else:
        seen.keep_ingested(receipt, record, ticket)
    return Ingested(
        ReceiptOutcome.ingested,
        reason,
        ticket_number=ticket.number,
        message_id=message.id,
        is_new=is_new,
    )


async def _record_bounce(
    session: AsyncSession, *, parsed: ParsedMail, runtime: Runtime, now: datetime
) -> tuple[Message, Ticket] | None:
    """A delivery report: attach it to the ticket whose reply bounced and mark that delivery
    failed (permanent) or note the delay (transient). Never a new customer ticket."""
    bounce = parsed.automation.bounce
    assert bounce is not None
    for original in bounce.original_message_ids:
        row = await outbox.find_by_message_id_header(session, original)
        if row is None or row.ticket_id is None:
            continue
        ticket = await session.get(Ticket, row.ticket_id)
        if ticket is None:
            continue
        who = ", ".join(bounce.recipients) or "the recipient"
        status = f" (status {bounce.status})" if bounce.status else ""
        if bounce.is_transient:
            text = f"Delivery to {who} is delayed{status}; the mail server keeps trying."
        else:
            text = f"Delivery to {who} failed{status}. The customer did not get this reply."
            outbox.mark_failed(row, error=f"bounced: {text}")
        message = Message(
            ticket_id=ticket.id, kind=MessageKind.system, body_text=text, created_at=now
        )
        session.add(message)
        await session.flush()
        history.record_event(
            session,
            ticket,
            action=EventAction.message_added,
            now=now,
            field="message",
            after={"id": message.id, "kind": "system"},
        )
        history.touch(ticket, now)
        await session.flush()
        return message, ticket
    return None


def auto_ack_verdict(
    parsed: ParsedMail, mailbox: Mailbox | None, ours: frozenset[str]
) -> tuple[bool, str]:
    """RFC 3834 and AC-14: whether a new ticket's sender may get an acknowledgement, and why."""
    if mailbox is None or not mailbox.auto_ack:
        return False, "auto-acknowledgement is off for this mailbox"
    if parsed.automation.reasons:
        names = ", ".join(r.value for r in parsed.automation.reasons)
        return False, f"the mail is automated ({names}): never answered automatically"
    if parsed.automation.suppresses_auto_reply:
        return False, "the sender asked for no automatic replies (X-Auto-Response-Suppress)"
    if any(a.content_type == "text/calendar" for a in parsed.attachments):
        # An invitation is never answered automatically (corpus 113): RFC 5546 (iMIP) answers
        # go to the organiser, and any mail back could read as accepting or declining.
        return False, "a calendar invitation is never answered automatically"
    if not parsed.sender.is_verified or parsed.sender.address is None:
        return False, "the sender address cannot be trusted"
    if parsed.sender.address in ours:
        return False, "the sender is one of keepdesk's own addresses"
    return True, f"an acknowledgement goes to {parsed.sender.address} (once a day at most)"


async def _maybe_auto_ack(
    session: AsyncSession,
    *,
    parsed: ParsedMail,
    mailbox: Mailbox | None,
    ticket: Ticket,
    recipient: str,
    runtime: Runtime,
    now: datetime,
    ours: frozenset[str],
) -> None:
    allowed, _ = auto_ack_verdict(parsed, mailbox, ours)
    if not allowed or mailbox is None:
        return
    rate_key = f"ack:{mailbox.id}:{recipient}"
    if await outbox.count_recent(session, rate_key=rate_key, since=now - AUTO_ACK_EVERY):
        return
    domain = mailbox.address.rpartition("@")[2]
    await outbox.enqueue(
        session,
        kind=OutboxKind.auto_ack,
        message_id_header=ids.issue(
            runtime.secret, number=ticket.number, kind="auto_ack", domain=domain
        ),
        recipients=[recipient],
        now=now,
        mailbox_id=mailbox.id,
        ticket_id=ticket.id,
        rate_key=rate_key,
    )
