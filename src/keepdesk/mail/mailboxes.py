"""Mailboxes: adding and changing them, their sealed server credentials, and their fetch log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor, require_admin
from keepdesk.audit import service as audit
from keepdesk.audit.service import AuditActor
from keepdesk.errors import Conflict, InvalidInput, NotFound
from keepdesk.mail.models import Mailbox, ProcessedAction
from keepdesk.mail.servers import ServerUrl, parse_server_url
from keepdesk.secretbox import open_secret, seal


async def add_mailbox(
    session: AsyncSession,
    *,
    by: AuditActor,
    address: str,
    imap_url: str,
    smtp_url: str,
    secret: bytes,
    now: datetime,
    team_id: int | None = None,
    display_name: str = "",
    processed_action: ProcessedAction = ProcessedAction.move,
    processed_folder: str = "keepdesk/processed",
    quarantine_folder: str = "keepdesk/quarantine",
    allow_plaintext: bool = False,
    auto_ack: bool = False,
) -> Mailbox:
    address = accounts.normalize_email(address)
    imap = parse_server_url(imap_url, protocol="imap", allow_plaintext=allow_plaintext)
    smtp = parse_server_url(smtp_url, protocol="smtp", allow_plaintext=allow_plaintext)
    for folder in (processed_folder, quarantine_folder):
        if not folder.strip() or any(c in folder for c in '\r\n\x00*%"'):
            raise InvalidInput(f"folder name {folder!r} is not usable", code="invalid_folder")
    if team_id is not None:
        await accounts.get_team(session, team_id)
    if await find_mailbox(session, address) is not None:
        raise Conflict(f"a mailbox for {address} exists already", code="mailbox_exists")
    mailbox = Mailbox(
        address=address,
        display_name=" ".join(display_name.split())[:200],
        team_id=team_id,
        imap_url_sealed=seal(secret, imap.unparsed()),
        smtp_url_sealed=seal(secret, smtp.unparsed()),
        processed_action=processed_action,
        processed_folder=processed_folder.strip(),
        quarantine_folder=quarantine_folder.strip(),
        allow_plaintext=allow_plaintext,
        auto_ack=auto_ack,
        is_active=True,
        created_at=now,
        last_uid=0,
        rescan_required=False,
        fetched_count=0,
        quarantined_count=0,
    )
    session.add(mailbox)
    await session.flush()
    await audit.record(
        session,
        actor=by,
        action="mailbox.added",
        object_type="mailbox",
        object_id=mailbox.id,
        at=now,
        data={"address": address, "imap": imap.masked(), "smtp": smtp.masked()},
    )
    return mailbox


def imap_server(mailbox: Mailbox, secret: bytes) -> ServerUrl:
    return parse_server_url(
        open_secret(secret, mailbox.imap_url_sealed),
        protocol="imap",
        allow_plaintext=mailbox.allow_plaintext,
    )


def smtp_server(mailbox: Mailbox, secret: bytes) -> ServerUrl:
    return parse_server_url(
        open_secret(secret, mailbox.smtp_url_sealed),
        protocol="smtp",
        allow_plaintext=mailbox.allow_plaintext,
    )


async def find_mailbox(session: AsyncSession, address: str) -> Mailbox | None:
    return await session.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))


async def get_mailbox(session: AsyncSession, mailbox_id: int) -> Mailbox:
    mailbox = await session.get(Mailbox, mailbox_id)
    if mailbox is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return mailbox


async def list_mailboxes(session: AsyncSession, *, active_only: bool = False) -> list[Mailbox]:
    query = select(Mailbox).order_by(Mailbox.id)
    if active_only:
        query = query.where(Mailbox.is_active.is_(True))
    return list((await session.scalars(query)).all())


async def own_addresses(session: AsyncSession) -> frozenset[str]:
    return frozenset((await session.scalars(select(Mailbox.address))).all())


async def update_mailbox(
    session: AsyncSession,
    *,
    actor: Actor,
    mailbox_id: int,
    now: datetime,
    is_active: bool | None = None,
    auto_ack: bool | None = None,
    team_id: int | None = None,
    display_name: str | None = None,
) -> Mailbox:
    require_admin(actor)
    mailbox = await get_mailbox(session, mailbox_id)
    changes: dict[str, object] = {}
    if is_active is not None and is_active != mailbox.is_active:
        changes["is_active"], mailbox.is_active = is_active, is_active
    if auto_ack is not None and auto_ack != mailbox.auto_ack:
        changes["auto_ack"], mailbox.auto_ack = auto_ack, auto_ack
    if team_id is not None and team_id != mailbox.team_id:
        await accounts.get_team(session, team_id)
        changes["team_id"], mailbox.team_id = team_id, team_id
    if display_name is not None:
        mailbox.display_name = " ".join(display_name.split())[:200]
    await session.flush()
    if changes:
        await audit.record(
            session,
            actor=actor.audit,
            action="mailbox.updated",
            object_type="mailbox",
            object_id=mailbox.id,
            at=now,
            data=changes,
        )
    return mailbox
