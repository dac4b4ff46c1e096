"""One fetch pass over one mailbox, in the order that loses nothing (AC-1 to AC-6):

    SELECT → UID SEARCH after the cursor → per UID: size check → BODY.PEEK[] →
    raw bytes to the blob store (fsynced), parsed meanwhile → one transaction: receipt,
    ticket/message, cursor → only then MOVE / flag / delete on the server → mark the receipt
    done.

A crash anywhere leaves either nothing (the UID is fetched again; the receipt makes it a no-op)
or a committed receipt whose server action is redone on the next pass. A UIDVALIDITY change
stops every destructive action until a rescan has matched the folder's mail by content hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk import leases
from keepdesk.faults import crash_point
from keepdesk.mail import ingest as ingesting
from keepdesk.mail.imap import ImapClient, ImapError
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.mailboxes import imap_server, own_addresses
from keepdesk.mail.models import Mailbox, MailReceipt, ProcessedAction, ReceiptOutcome
from keepdesk.mail.parsing import ParsedMail, Rejected
from keepdesk.runtime import Runtime

log = logging.getLogger("keepdesk.mail.fetcher")

# A message is tried this often within a pass before it is quarantined (AC-6).
PROCESS_ATTEMPTS = 3
# A body shorter than its announced size is fetched again this often, then quarantined (F3).
FETCH_ATTEMPTS = 3


@dataclass
class FetchReport:
    mailbox: str
    fetched: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    errors: list[str] = field(default_factory=list)


class DatabaseDown(Exception):
    """The database failed: stop the pass with no IMAP side effects; retry later (AC-24)."""


def _is_database_down(exc: BaseException) -> bool:
    # A unique violation is not an outage: another fetcher committed the same UID first.
    return (
        isinstance(exc, OperationalError | DBAPIError)
        and not isinstance(exc, IntegrityError)
        and not isinstance(getattr(exc, "orig", None), ValueError)
    )


async def _load(runtime: Runtime, mailbox_id: int) -> Mailbox:
    async with runtime.db.session() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        if mailbox is None:
            raise LookupError(f"no mailbox {mailbox_id}")
        return mailbox


async def _record(runtime: Runtime, mailbox_id: int, **values: object) -> None:
    async with runtime.db.session(write=True) as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        if mailbox is not None:
            for name, value in values.items():
                setattr(mailbox, name, value)
            await session.commit()


async def fetch_once(
    runtime: Runtime,
    mailbox_id: int,
    *,
    limits: MailLimits | None = None,
    max_messages: int = 500,
    idle_seconds: float = 0,
) -> FetchReport:
    """One pass; with `idle_seconds`, then wait on the same connection (IDLE where the server
    has it) until new mail is announced or the time is up, and pass again."""
    limits = limits or ingesting.limits_for(runtime)
    mailbox = await _load(runtime, mailbox_id)
    report = FetchReport(mailbox=mailbox.address)
    now = runtime.clock.now()
    try:
        server = imap_server(mailbox, runtime.secret)
        async with ImapClient(server, timeout=runtime.settings.mail_imap_timeout_seconds) as imap:
            await _pass(runtime, imap, mailbox, limits, report, max_messages)
            if idle_seconds > 0:
                await imap.idle(idle_seconds)
                mailbox = await _load(runtime, mailbox_id)
                await _pass(runtime, imap, mailbox, limits, report, max_messages)
    except (ImapError, DatabaseDown, ValueError, DBAPIError) as exc:
        # A database error outside one message's transaction (the cursor, a receipt marked
        # done) ends the pass the same way: nothing more happens on the server (AC-24).
        if isinstance(exc, DBAPIError) and not _is_database_down(exc):
            raise
        report.errors.append(str(exc))
        log.warning("fetching %s failed: %s", mailbox.address, exc)
        with contextlib.suppress(OperationalError, DBAPIError):
            await _record(
                runtime,
                mailbox_id,
                last_fetch_at=now,
                last_error=str(exc)[:2000],
                last_error_at=now,
            )
        return report
    await _record(runtime, mailbox_id, last_fetch_at=now, last_success_at=runtime.clock.now())
    return report


def lease_name(mailbox_id: int) -> str:
    return f"mailbox:{mailbox_id}"


async def fetch_under_lease(
    runtime: Runtime,
    mailbox_id: int,
    *,
    holder: str,
    ttl: timedelta,
    release: bool,
    idle_seconds: float = 0,
) -> FetchReport | None:
    """A pass only while this holder has the mailbox's lease (AC-8); None when another process
    has it. The worker keeps the lease between passes; `fetch-once` gives it back."""
    name = lease_name(mailbox_id)
    async with runtime.db.session(write=True) as session:
        mine = await leases.acquire(
            session, name=name, holder=holder, ttl=ttl, now=runtime.clock.now()
        )
        await session.commit()
    if not mine:
        return None
    try:
        return await fetch_once(runtime, mailbox_id, idle_seconds=idle_seconds)
    finally:
        if release:
            async with runtime.db.session(write=True) as session:
                await leases.release(session, name=name, holder=holder)
                await session.commit()


async def _pass(
    runtime: Runtime,
    imap: ImapClient,
    mailbox: Mailbox,
    limits: MailLimits,
    report: FetchReport,
    max_messages: int,
) -> None:
    folder = imap_server(mailbox, runtime.secret).folder
    uidvalidity = await imap.select(folder)
    crash_point("CP1")
    rescan = mailbox.rescan_required
    last_uid = mailbox.last_uid
    if mailbox.uidvalidity is not None and uidvalidity != mailbox.uidvalidity:
        # AC-4: every UID we knew is meaningless now. Nothing destructive until the rescan
        # below has matched each message by content hash.
        alert = (
            f"UIDVALIDITY of {folder} changed from {mailbox.uidvalidity} to {uidvalidity}: "
            "rescanning; no mail is moved or deleted until it is done"
        )
        log.error("%s: %s", mailbox.address, alert)
        rescan, last_uid = True, 0
        await _record(
            runtime,
            mailbox.id,
            uidvalidity=uidvalidity,
            last_uid=0,
            rescan_required=True,
            alert=alert,
        )
    elif mailbox.uidvalidity is None:
        await _record(runtime, mailbox.id, uidvalidity=uidvalidity)

    if not rescan:
        await _finish_pending(runtime, imap, mailbox, uidvalidity)
    uids = await imap.uids_after(last_uid)
    batch = uids[:max_messages]
    known = await _receipts_among(runtime, mailbox.id, uidvalidity, batch)
    own = await _own_addresses(runtime) if batch else frozenset[str]()
    for uid in batch:
        outcome = await _one(
            runtime, imap, mailbox, uidvalidity, uid, limits, rescan, known=known.get(uid), own=own
        )
        if outcome is None:
            continue
        report.fetched += 1
        if outcome == ReceiptOutcome.ingested:
            report.ingested += 1
        elif outcome == ReceiptOutcome.duplicate:
            report.duplicates += 1
        elif outcome == ReceiptOutcome.quarantined:
            report.quarantined += 1
    if rescan and len(uids) <= max_messages:
        await _record(
            runtime,
            mailbox.id,
            rescan_required=False,
            alert=f"rescan after a UIDVALIDITY change finished at "
            f"{runtime.clock.now():%Y-%m-%d %H:%M} UTC; no duplicates were made",
        )


async def _finish_pending(
    runtime: Runtime, imap: ImapClient, mailbox: Mailbox, uidvalidity: int
) -> None:
    """Redo the server action of receipts committed before a crash (CP6, CP7)."""
    async with runtime.db.session() as session:
        pending = (
            await session.scalars(
                select(MailReceipt).where(
                    MailReceipt.mailbox_id == mailbox.id,
                    MailReceipt.uidvalidity == uidvalidity,
                    MailReceipt.imap_done.is_(False),
                )
            )
        ).all()
    for receipt in pending:
        if receipt.uid is not None:
            await _server_action(runtime, imap, mailbox, receipt.uid, receipt.outcome)
            await _mark_done(runtime, receipt.id)


async def _receipts_among(
    runtime: Runtime, mailbox_id: int, uidvalidity: int, uids: list[int]
) -> dict[int, MailReceipt]:
    """The receipts already committed for these UIDs, in one look-up for the pass (one per mail
    cost a session each). There are none unless the cursor was lost or a rescan runs: a
    receipt and its cursor move commit together. Another fetcher committing one meanwhile is
    caught by the receipt's unique key (`_one`)."""
    if not uids:
        return {}
    async with runtime.db.session() as session:
        found = await session.scalars(
            select(MailReceipt).where(
                MailReceipt.mailbox_id == mailbox_id,
                MailReceipt.uidvalidity == uidvalidity,
                MailReceipt.uid.between(min(uids), max(uids)),
            )
        )
        return {r.uid: r for r in found if r.uid is not None}


async def _own_addresses(runtime: Runtime) -> frozenset[str]:
    async with runtime.db.session() as session:
        return await own_addresses(session)


async def _parse_first(
    runtime: Runtime, raw: bytes, limits: MailLimits, own: frozenset[str], uid: int
) -> ParsedMail | Rejected | None:
    """The mail parsed before its write transaction opens (2-3 ms of CPU the database's one
    writer then does not wait through). None when the parser itself failed: the transaction
    parses again, and its attempts and quarantine deal with it as before."""
    try:
        return await ingesting.parse(runtime, raw, own=own, limits=limits)
    except Exception:
        log.exception("parsing UID %d failed before its transaction", uid)
        return None


async def _fetch_body(imap: ImapClient, uid: int) -> tuple[bytes | None, str | None]:
    """The raw bytes, or None with the reason after every attempt came back short (F3)."""
    reason = None
    for _ in range(FETCH_ATTEMPTS):
        fetched = await imap.fetch(uid)
        crash_point("CP2")
        if fetched is None:
            return None, "gone"
        if fetched.data and len(fetched.data) == fetched.size:
            return fetched.data, None
        reason = f"the server announced {fetched.size} bytes but sent {len(fetched.data)}"
    return None, reason


async def _one(
    runtime: Runtime,
    imap: ImapClient,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    limits: MailLimits,
    rescan: bool,
    *,
    known: MailReceipt | None,
    own: frozenset[str],
) -> ReceiptOutcome | None:
    if known is not None:
        # Fetched and committed before (the cursor was lost): finish its server action only.
        if not known.imap_done and not rescan:
            await _server_action(runtime, imap, mailbox, uid, known.outcome)
            await _mark_done(runtime, known.id)
        return None
    size = await imap.size_of(uid)
    if size is None:
        return None  # expunged by another client meanwhile (F5): nothing to do
    incomplete: str | None = None
    raw: bytes | None
    if size > limits.max_bytes:
        # AC-7: too large to download; keep its header block so an admin sees what it was.
        header = await imap.fetch(uid, "BODY.PEEK[HEADER]")
        raw = header.data if header else b""
        incomplete = f"the message is {size} bytes; the limit is {limits.max_bytes}"
        reason = "too_large"
    else:
        raw, incomplete = await _fetch_body(imap, uid)
        reason = "fetch_incomplete"
        if incomplete == "gone":
            return None
    body = raw or b""
    crash_point("CP3")
    # The parse (CPU) runs while the blob store fsyncs (disk); both finish before the
    # transaction opens.
    parsing = (
        None if incomplete else asyncio.create_task(_parse_first(runtime, body, limits, own, uid))
    )
    try:
        blob_key = await asyncio.to_thread(runtime.blobs.put, body)
    except BaseException:
        if parsing is not None:
            parsing.cancel()
        raise
    crash_point("CP4")
    parsed = None if parsing is None else await parsing

    outcome = None
    for attempt in range(1, PROCESS_ATTEMPTS + 1):
        try:
            outcome = await _commit(
                runtime,
                mailbox,
                uidvalidity,
                uid,
                body,
                blob_key,
                limits,
                rescan,
                quarantine=(reason, incomplete) if incomplete else None,
                parsed=parsed,
                own=own,
            )
            break
        except IntegrityError:
            # Someone else (a fetch-once beside the worker) committed this UID meanwhile: the
            # mail is stored; its receipt is theirs, and so is the server action.
            return None
        except Exception as exc:
            if _is_database_down(exc):
                raise DatabaseDown(f"the database failed: {exc}") from exc
            log.exception(
                "processing UID %d of %s failed (attempt %d)", uid, mailbox.address, attempt
            )
            if attempt == PROCESS_ATTEMPTS:
                detail = f"processing failed {PROCESS_ATTEMPTS} times: {type(exc).__name__}: {exc}"
                outcome = await _commit(
                    runtime,
                    mailbox,
                    uidvalidity,
                    uid,
                    body,
                    blob_key,
                    limits,
                    rescan,
                    quarantine=("processing_error", detail),
                )
    crash_point("CP6")
    if outcome is not None and not rescan:
        await _server_action(runtime, imap, mailbox, uid, outcome)
        await _mark_done_uid(runtime, mailbox.id, uidvalidity, uid)
    return outcome


async def _commit(
    runtime: Runtime,
    mailbox_ref: Mailbox,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    blob_key: str,
    limits: MailLimits,
    rescan: bool,
    *,
    quarantine: tuple[str, str] | None,
    parsed: ParsedMail | Rejected | None = None,
    own: frozenset[str] | None = None,
) -> ReceiptOutcome:
    now = runtime.clock.now()
    async with runtime.db.session(write=True) as session:
        mailbox = await session.get(Mailbox, mailbox_ref.id)
        assert mailbox is not None
        if rescan and quarantine is None:
            known = await _known_content(session, mailbox.id, hashlib.sha256(raw).hexdigest())
            if known:
                session.add(
                    MailReceipt(
                        mailbox_id=mailbox.id,
                        uidvalidity=uidvalidity,
                        uid=uid,
                        content_sha256=hashlib.sha256(raw).hexdigest(),
                        body_sha256=ingesting.body_sha256(raw),
                        size=len(raw),
                        outcome=ReceiptOutcome.duplicate,
                        imap_done=False,
                        created_at=now,
                    )
                )
                mailbox.last_uid = max(mailbox.last_uid, uid)
                await session.commit()
                return ReceiptOutcome.duplicate
        if quarantine is not None:
            known_receipt = await ingesting.find_receipt(
                session, mailbox_id=mailbox.id, uidvalidity=uidvalidity, uid=uid
            )
            if known_receipt is not None:
                return known_receipt.outcome
            item = await ingesting.quarantine(
                session,
                mailbox=mailbox,
                blob_key=blob_key,
                size=len(raw),
                reason=quarantine[0],
                detail=quarantine[1],
                now=now,
                uidvalidity=uidvalidity,
                uid=uid,
            )
            session.add(
                MailReceipt(
                    mailbox_id=mailbox.id,
                    uidvalidity=uidvalidity,
                    uid=uid,
                    content_sha256=hashlib.sha256(raw).hexdigest(),
                    body_sha256=ingesting.body_sha256(raw),
                    size=len(raw),
                    outcome=ReceiptOutcome.quarantined,
                    quarantine_id=item.id,
                    imap_done=False,
                    created_at=now,
                )
            )
            outcome = ReceiptOutcome.quarantined
        else:
            result = await ingesting.ingest(
                session,
                runtime=runtime,
                mailbox=mailbox,
                raw=raw,
                blob_key=blob_key,
                now=now,
                uidvalidity=uidvalidity,
                uid=uid,
                limits=limits,
                parsed=parsed,
                own=own,
            )
            outcome = result.outcome
        mailbox.last_uid = max(mailbox.last_uid, uid)
        crash_point("CP5")
        await session.commit()
        return outcome


async def _known_content(session: AsyncSession, mailbox_id: int, sha: str) -> bool:
    found = await session.scalar(
        select(MailReceipt.id)
        .where(MailReceipt.mailbox_id == mailbox_id, MailReceipt.content_sha256 == sha)
        .limit(1)
    )
    return found is not None


async def _server_action(
    runtime: Runtime, imap: ImapClient, mailbox: Mailbox, uid: int, outcome: ReceiptOutcome
) -> None:
    if outcome == ReceiptOutcome.quarantined:
        target = imap.folder(mailbox.quarantine_folder)
        await imap.ensure_folder(target)
        if not await imap.move(uid, target):
            await _warn_flag_only(runtime, mailbox)
        return
    if mailbox.processed_action == ProcessedAction.flag:
        await imap.flag_seen(uid)
    elif mailbox.processed_action == ProcessedAction.delete:
        if not await imap.delete(uid, before_expunge=lambda: crash_point("CP7")):
            await _warn_flag_only(runtime, mailbox)
    else:
        target = imap.folder(mailbox.processed_folder)
        await imap.ensure_folder(target)
        if not await imap.move(uid, target):
            await _warn_flag_only(runtime, mailbox)


async def _warn_flag_only(runtime: Runtime, mailbox: Mailbox) -> None:
    # F6: without MOVE and UIDPLUS nothing is ever expunged; the admin is told.
    await _record(
        runtime,
        mailbox.id,
        alert=(
            "the IMAP server supports neither MOVE nor UIDPLUS: processed mail is only flagged "
            "\\Seen and stays in the folder"
        ),
    )


async def _mark_done(runtime: Runtime, receipt_id: int) -> None:
    async with runtime.db.session(write=True) as session:
        receipt = await session.get(MailReceipt, receipt_id)
        if receipt is not None:
            receipt.imap_done = True
            await session.commit()


async def _mark_done_uid(runtime: Runtime, mailbox_id: int, uidvalidity: int, uid: int) -> None:
    async with runtime.db.session(write=True) as session:
        await session.execute(
            update(MailReceipt)
            .where(
                MailReceipt.mailbox_id == mailbox_id,
                MailReceipt.uidvalidity == uidvalidity,
                MailReceipt.uid == uid,
            )
            .values(imap_done=True)
        )
        await session.commit()
