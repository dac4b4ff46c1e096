"""One fetch pass over one mailbox, in the order that loses nothing (AC-1 to AC-6):

    SELECT → UID SEARCH after the cursor → their sizes (a command for up to 100 UIDs) →
    per UID: size check → BODY.PEEK[] → parsed (the parser's processes) → for a batch of such
    mails (settings.mail_fetch_batch): their raw bytes to the blob store while they parse, and
    their attachments after, each made durable together (`BlobStore.put_many`) → one
    transaction: each receipt, ticket/message, the cursor → only then MOVE / flag / delete on
    the server, one command for the batch → mark its receipts done.

A crash anywhere leaves either nothing (the UID is fetched again; the receipt makes it a no-op)
or a committed receipt whose server action is redone on the next pass. A batch whose
transaction fails is recorded again one mail to a transaction, each with its own attempts and
quarantine, so a bad mail costs only itself. A UIDVALIDITY change stops every destructive
action until a rescan has matched the folder's mail by content hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk import leases
from keepdesk.blobs import BlobStore
from keepdesk.faults import crash_point
from keepdesk.mail import ingest as ingesting
from keepdesk.mail.imap import Fetched as Downloaded
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
# A batch (settings.mail_fetch_batch mails) is recorded early once it holds this many bytes.
BATCH_BYTES = 32 * 1024 * 1024
# Sizes are asked for, and server actions redone after a crash, in commands of at most this
# many UIDs.
UIDS_PER_COMMAND = 100


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


class StorageDown(Exception):
    """The blob store cannot take a mail (a full disk, say): stop the pass with no IMAP side
    effects and nothing of the batch recorded; retry later (F12, AC-25)."""


# What a mail cannot help: the file system is full, read-only or failing. Not a reason to
# quarantine the mail, whose attachments were being stored when it happened.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def _is_storage_down(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


def _raise_if_outage(exc: Exception) -> None:
    """A database or disk that fails ends the pass (no fault of the mail being recorded)."""
    if _is_database_down(exc):
        raise DatabaseDown(f"the database failed: {exc}") from exc
    if _is_storage_down(exc):
        raise StorageDown(f"the blob store failed: {exc}") from exc


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
    except (ImapError, DatabaseDown, StorageDown, ValueError, DBAPIError) as exc:
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
    recorder = Recorder(runtime, mailbox, uidvalidity, limits, own, rescan)
    # The sizes (AC-7's check before download) of the mails to fetch, a command per hundred.
    todo = [uid for uid in batch if uid not in known]
    sizes: dict[int, int] = {}
    for first in range(0, len(todo), UIDS_PER_COMMAND):
        sizes.update(await imap.sizes_of(todo[first : first + UIDS_PER_COMMAND]))
    pending: list[Fetched] = []
    # Bodies fetched ahead, a batch's worth in one UID FETCH (one round trip a mail before).
    ahead = _Ahead(imap, todo, sizes, limits.max_bytes, runtime.settings.mail_fetch_batch)
    try:
        for uid in batch:
            receipt = known.get(uid)
            if receipt is not None:
                # Fetched and committed before (the cursor was lost): its server action only.
                if not receipt.imap_done and not rescan:
                    await _act(runtime, imap, mailbox, uidvalidity, [(uid, receipt.outcome)])
                continue
            fetched = await _fetch(recorder, imap, uid, sizes.get(uid), ahead)
            if fetched is None:
                continue
            pending.append(fetched)
            if _full(runtime, pending):
                ready, pending = pending, []
                await _settle(recorder, imap, ready, report)
        if pending:
            ready, pending = pending, []
            await _settle(recorder, imap, ready, report)
    except ImapError:
        # The connection broke while a batch was being fetched: what it holds is stored, so
        # record it (nothing happens on the server now; the next pass does it) and give up.
        if pending:
            ready, pending = pending, []
            await _settle(recorder, None, ready, report)
        raise
    finally:
        for fetched in pending:
            fetched.cancel()
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
    done = [(r.uid, r.outcome) for r in pending if r.uid is not None]
    for first in range(0, len(done), UIDS_PER_COMMAND):
        await _act(runtime, imap, mailbox, uidvalidity, done[first : first + UIDS_PER_COMMAND])


async def _receipts_among(
    runtime: Runtime, mailbox_id: int, uidvalidity: int, uids: list[int]
) -> dict[int, MailReceipt]:
    """The receipts already committed for these UIDs, in one look-up for the pass (one per mail
    cost a session each). There are none unless the cursor was lost or a rescan runs: a
    receipt and its cursor move commit together. Another fetcher committing one meanwhile is
    caught by the receipt's unique key (`record`)."""
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


async def _parse_first(recorder: Recorder, raw: bytes, uid: int) -> ParsedMail | Rejected | None:
    """The mail parsed before its write transaction opens (2-3 ms of CPU the database's one
    writer then does not wait through). None when the parser itself failed: the transaction
    parses again, and its attempts and quarantine deal with it as before."""
    try:
        parsed = await ingesting.parse(
            recorder.runtime, raw, own=recorder.own, limits=recorder.limits
        )
    except Exception:
        log.exception("parsing UID %d failed before its transaction", uid)
        return None
    return parsed


class _Ahead:
    """The bodies of a pass's next mails, fetched a batch at a time (`batch` mails, at most
    `BATCH_BYTES`) in one command when the first of them is wanted. A mail too large to
    download (AC-7) or of unknown size is never among them."""

    def __init__(
        self,
        imap: ImapClient,
        todo: list[int],
        sizes: dict[int, int],
        max_bytes: int,
        batch: int,
    ) -> None:
        self.imap = imap
        self.todo = todo
        self.position = {uid: i for i, uid in enumerate(todo)}
        self.sizes = sizes
        self.max_bytes = max_bytes
        self.batch = batch
        self.bodies: dict[int, Downloaded] = {}
        self.asked: set[int] = set()

    def _fits(self, uid: int) -> bool:
        size = self.sizes.get(uid)
        return size is not None and size <= self.max_bytes

    async def take(self, uid: int) -> Downloaded | None:
        """Its body, fetched with those of the next mails; None when it was not among the
        answer (another client expunged it meanwhile, say): the caller fetches it alone."""
        if uid not in self.asked and self._fits(uid):
            chunk: list[int] = []
            total = 0
            for later in self.todo[self.position[uid] :]:
                if len(chunk) >= self.batch or (chunk and total >= BATCH_BYTES):
                    break
                if self._fits(later) and later not in self.asked:
                    chunk.append(later)
                    total += self.sizes[later]
            self.asked.update(chunk)
            self.bodies.update(await self.imap.fetch_many(chunk))
        return self.bodies.pop(uid, None)


async def _fetch_body(imap: ImapClient, uid: int, ahead: _Ahead) -> tuple[bytes | None, str | None]:
    """The raw bytes, or None with the reason after every attempt came back short (F3). The
    first attempt takes what `ahead` fetched, when it has the mail."""
    reason = None
    for attempt in range(FETCH_ATTEMPTS):
        fetched = await ahead.take(uid) if attempt == 0 else None
        if fetched is None:
            fetched = await imap.fetch(uid)
        crash_point("CP2")
        if fetched is None:
            return None, "gone"
        if fetched.data and len(fetched.data) == fetched.size:
            return fetched.data, None
        reason = f"the server announced {fetched.size} bytes but sent {len(fetched.data)}"
    return None, reason


@dataclass(frozen=True)
class Recorder:
    """What recording a pass's mails needs: where they come from, how they are parsed, and
    whether the pass is a rescan after a UIDVALIDITY change."""

    runtime: Runtime
    mailbox: Mailbox
    uidvalidity: int
    limits: MailLimits
    own: frozenset[str]
    rescan: bool = False


@dataclass
class Fetched:
    """A mail being parsed, its raw bytes not yet in the blob store; nothing about it is
    committed yet. `record` stores a batch's mails together, and `blob_key` is set then.
    `quarantine` holds the reason when it cannot be ingested (too large to download, cut short
    by the server)."""

    uid: int
    raw: bytes
    parsing: asyncio.Task[ParsedMail | Rejected | None] | None = None
    quarantine: tuple[str, str] | None = None
    blob_key: str = ""

    async def parsed(self) -> ParsedMail | Rejected | None:
        """Its parse (None when it was not parsed, or the parser failed)."""
        return None if self.parsing is None else await self.parsing

    def cancel(self) -> None:
        if self.parsing is not None:
            self.parsing.cancel()


def stage(
    recorder: Recorder, uid: int, raw: bytes, *, quarantine: tuple[str, str] | None = None
) -> Fetched:
    """Start parsing the raw bytes (CPU, in the parser's processes); `record` stores the
    batch's raw bytes meanwhile and waits for both before its transaction opens."""
    parsing = (
        None if quarantine is not None else asyncio.create_task(_parse_first(recorder, raw, uid))
    )
    return Fetched(uid, raw, parsing, quarantine)


async def _ready(recorder: Recorder, pending: list[Fetched]) -> list[ParsedMail | Rejected | None]:
    """The batch's raw bytes in the blob store, durable, and each mail parsed; then the blobs
    of the parsed mails' attachments, durable, so that the transaction finds them on disk
    (an attachment is never written inside it). Two `put_many` calls, each two syncs for the
    whole batch (`BlobStore.put_many`), not two fsyncs a blob."""
    blobs = recorder.runtime.blobs
    try:
        storing = asyncio.create_task(_store(blobs, [f.raw for f in pending]))
        try:
            parsed = [await f.parsed() for f in pending]
        finally:
            keys = await storing
        for fetched, key in zip(pending, keys, strict=True):
            fetched.blob_key = key
        crash_point("CP4")
        attachments = [a.data for p in parsed if isinstance(p, ParsedMail) for a in p.attachments]
        if attachments:
            # Unused if the mail is not ingested after all, as its raw bytes' blob may be; on
            # failure the transaction stores them again, and reports it.
            with contextlib.suppress(StorageDown):
                await _store(blobs, attachments)
    except BaseException:
        # A blob that could not be stored (a full disk, say): nothing of the batch is
        # recorded, and its mails stay on the server for the next pass.
        for fetched in pending:
            fetched.cancel()
        raise
    return parsed


async def _store(blobs: BlobStore, items: list[bytes]) -> list[str]:
    try:
        return await asyncio.to_thread(blobs.put_many, items)
    except OSError as exc:
        raise StorageDown(f"the blob store failed: {exc}") from exc


async def _fetch(
    recorder: Recorder, imap: ImapClient, uid: int, size: int | None, ahead: _Ahead
) -> Fetched | None:
    """The mail of one UID of `size` bytes, parsing (`record` stores it with its batch); None
    when another client expunged it."""
    if size is None:
        return None  # expunged by another client meanwhile (F5): nothing to do
    limits = recorder.limits
    problem: tuple[str, str] | None = None
    if size > limits.max_bytes:
        # AC-7: too large to download; keep its header block so an admin sees what it was.
        header = await imap.fetch(uid, "BODY.PEEK[HEADER]")
        raw = header.data if header else b""
        problem = ("too_large", f"the message is {size} bytes; the limit is {limits.max_bytes}")
    else:
        body, incomplete = await _fetch_body(imap, uid, ahead)
        if incomplete == "gone":
            return None
        raw = body or b""
        if incomplete:
            problem = ("fetch_incomplete", incomplete)
    crash_point("CP3")
    return stage(recorder, uid, raw, quarantine=problem)


def _full(runtime: Runtime, pending: list[Fetched]) -> bool:
    return (
        len(pending) >= runtime.settings.mail_fetch_batch
        or sum(len(f.raw) for f in pending) >= BATCH_BYTES
    )


async def _settle(
    recorder: Recorder, imap: ImapClient | None, pending: list[Fetched], report: FetchReport
) -> None:
    """Record a batch, then, only after its commit, do its server actions (a command for all
    its mails) and mark them done. Without `imap` (the connection broke) the next pass does
    the actions."""
    outcomes = await record(recorder, pending)
    done: list[tuple[int, ReceiptOutcome]] = []
    for fetched, outcome in zip(pending, outcomes, strict=True):
        if outcome is None:
            continue
        report.fetched += 1
        if outcome == ReceiptOutcome.ingested:
            report.ingested += 1
        elif outcome == ReceiptOutcome.duplicate:
            report.duplicates += 1
        elif outcome == ReceiptOutcome.quarantined:
            report.quarantined += 1
        done.append((fetched.uid, outcome))
    if imap is None or not done:
        return
    crash_point("CP6")
    if not recorder.rescan:
        await _act(recorder.runtime, imap, recorder.mailbox, recorder.uidvalidity, done)


async def record(recorder: Recorder, pending: list[Fetched]) -> list[ReceiptOutcome | None]:
    """Commit a batch of fetched mails: all in one transaction, or, when that fails, each in
    a transaction of its own with its own attempts and quarantine (AC-6), so one bad mail
    never holds back the others. None for a mail another fetcher committed meanwhile."""
    parsed = await _ready(recorder, pending)
    if len(pending) > 1:
        try:
            return list(await _commit_all(recorder, pending, parsed))
        except Exception as exc:
            _raise_if_outage(exc)
            # The error's text may quote the mail (SQL parameters); the attempts below log it.
            log.warning(
                "recording %d mails of %s together failed (%s); recording each on its own",
                len(pending),
                recorder.mailbox.address,
                type(exc).__name__,
            )
    return [
        await _commit_with_attempts(recorder, f, p) for f, p in zip(pending, parsed, strict=True)
    ]


async def _commit_with_attempts(
    recorder: Recorder, fetched: Fetched, parsed: ParsedMail | Rejected | None
) -> ReceiptOutcome | None:
    for attempt in range(1, PROCESS_ATTEMPTS + 1):
        try:
            (outcome,) = await _commit_all(recorder, [fetched], [parsed])
            return outcome
        except IntegrityError:
            # Someone else (a fetch-once beside the worker) committed this UID meanwhile: the
            # mail is stored; its receipt is theirs, and so is the server action.
            return None
        except Exception as exc:
            _raise_if_outage(exc)
            log.exception(
                "processing UID %d of %s failed (attempt %d)",
                fetched.uid,
                recorder.mailbox.address,
                attempt,
            )
            if attempt == PROCESS_ATTEMPTS:
                detail = f"processing failed {PROCESS_ATTEMPTS} times: {type(exc).__name__}: {exc}"
                failed = dataclasses.replace(fetched, quarantine=("processing_error", detail))
                (outcome,) = await _commit_all(recorder, [failed], [None])
                return outcome
    return None


async def _commit_all(
    recorder: Recorder, pending: list[Fetched], parsed: list[ParsedMail | Rejected | None]
) -> list[ReceiptOutcome]:
    """One transaction: each mail's receipt (and ticket, message or quarantine record), and the
    cursor past the last of them."""
    now = recorder.runtime.clock.now()
    async with recorder.runtime.db.session(write=True) as session:
        mailbox = await session.get(Mailbox, recorder.mailbox.id)
        assert mailbox is not None
        outcomes: list[ReceiptOutcome] = []
        counted = 0
        async with ingesting.recording_batch(
            session,
            mailbox_id=mailbox.id,
            uidvalidity=recorder.uidvalidity,
            mails=[(f.uid, f.raw, p) for f, p in zip(pending, parsed, strict=True)],
        ) as seen:
            for fetched, parse in zip(pending, parsed, strict=True):
                outcome, new = await _record_mail(
                    session, recorder, mailbox, fetched, parse, now, seen
                )
                outcomes.append(outcome)
                counted += new
        # The mailbox row changes once a batch (a change to it in every mail would be flushed
        # before each mail's first look-up).
        mailbox.fetched_count += counted
        mailbox.last_uid = max(mailbox.last_uid, *(f.uid for f in pending))
        crash_point("CP5")
        await session.commit()
        return outcomes


async def _record_mail(
    session: AsyncSession,
    recorder: Recorder,
    mailbox: Mailbox,
    fetched: Fetched,
    parsed: ParsedMail | Rejected | None,
    now: datetime,
    seen: ingesting.Seen,
) -> tuple[ReceiptOutcome, bool]:
    """One mail's rows in the batch's transaction (`mailbox` is the session's own copy, `seen`
    what the batch looked up), and whether it counts as fetched: every mail taken from the
    server once, quarantined ones too, but not a receipt known already or a mail a rescan
    found again."""
    uid, raw, quarantine = fetched.uid, fetched.raw, fetched.quarantine

    def receipt(
        outcome: ReceiptOutcome, *, content_sha: str | None = None, quarantine_id: int | None = None
    ) -> MailReceipt:
        return ingesting.new_receipt(
            mailbox_id=mailbox.id,
            uidvalidity=recorder.uidvalidity,
            uid=uid,
            raw=raw,
            now=now,
            outcome=outcome,
            content_sha=content_sha,
            quarantine_id=quarantine_id,
        )

    if recorder.rescan and quarantine is None:
        content_sha = hashlib.sha256(raw).hexdigest()
        if await _known_content(session, mailbox.id, content_sha):
            seen.keep(receipt(ReceiptOutcome.duplicate, content_sha=content_sha))
            return ReceiptOutcome.duplicate, False
    if quarantine is not None:
        known_receipt = seen.receipts.get(uid)
        if known_receipt is not None:
            return known_receipt.outcome, False
        item = await ingesting.quarantine(
            session,
            mailbox=mailbox,
            blob_key=fetched.blob_key,
            size=len(raw),
            reason=quarantine[0],
            detail=quarantine[1],
            now=now,
            uidvalidity=recorder.uidvalidity,
            uid=uid,
        )
        seen.keep(receipt(ReceiptOutcome.quarantined, quarantine_id=item.id))
        return ReceiptOutcome.quarantined, True
    result = await ingesting.ingest(
        session,
        runtime=recorder.runtime,
        mailbox=mailbox,
        raw=raw,
        blob_key=fetched.blob_key,
        now=now,
        uidvalidity=recorder.uidvalidity,
        uid=uid,
        limits=recorder.limits,
        parsed=parsed,
        own=recorder.own,
        count=False,
        seen=seen,
    )
    return result.outcome, result.recorded


async def _known_content(session: AsyncSession, mailbox_id: int, sha: str) -> bool:
    found = await session.scalar(
        select(MailReceipt.id)
        .where(MailReceipt.mailbox_id == mailbox_id, MailReceipt.content_sha256 == sha)
        .limit(1)
    )
    return found is not None


async def _act(
    runtime: Runtime,
    imap: ImapClient,
    mailbox: Mailbox,
    uidvalidity: int,
    done: list[tuple[int, ReceiptOutcome]],
) -> None:
    """The server actions of committed mails, a command for all of one kind (quarantined mail
    to the quarantine folder, the rest as the mailbox says), then their receipts marked done."""
    held = [uid for uid, outcome in done if outcome == ReceiptOutcome.quarantined]
    rest = [uid for uid, outcome in done if outcome != ReceiptOutcome.quarantined]
    if held:
        await _server_action(runtime, imap, mailbox, held, quarantined=True)
    if rest:
        await _server_action(runtime, imap, mailbox, rest, quarantined=False)
    await _mark_done_uids(runtime, mailbox.id, uidvalidity, [uid for uid, _ in done])


async def _server_action(
    runtime: Runtime, imap: ImapClient, mailbox: Mailbox, uids: list[int], *, quarantined: bool
) -> None:
    if quarantined:
        target = imap.folder(mailbox.quarantine_folder)
        await imap.ensure_folder(target)
        if not await imap.move(uids, target):
            await _warn_flag_only(runtime, mailbox)
        return
    if mailbox.processed_action == ProcessedAction.flag:
        await imap.flag_seen(uids)
    elif mailbox.processed_action == ProcessedAction.delete:
        if not await imap.delete(uids, before_expunge=lambda: crash_point("CP7")):
            await _warn_flag_only(runtime, mailbox)
    else:
        target = imap.folder(mailbox.processed_folder)
        await imap.ensure_folder(target)
        if not await imap.move(uids, target):
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


async def _mark_done_uids(
    runtime: Runtime, mailbox_id: int, uidvalidity: int, uids: list[int]
) -> None:
    async with runtime.db.session(write=True) as session:
        await session.execute(
            update(MailReceipt)
            .where(
                MailReceipt.mailbox_id == mailbox_id,
                MailReceipt.uidvalidity == uidvalidity,
                MailReceipt.uid.in_(uids),
            )
            .values(imap_done=True)
        )
        await session.commit()
