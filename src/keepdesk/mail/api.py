"""REST routes for mailboxes and quarantined mail (admins only): thin adapters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from keepdesk.accounts.access import require_admin
from keepdesk.accounts.dependencies import ApiActor, RuntimeDep, Session
from keepdesk.mail import mailboxes
from keepdesk.mail import quarantine as quarantine_service
from keepdesk.mail.models import QuarantineStatus
from keepdesk.mail.schemas import (
    MailboxCreate,
    MailboxRead,
    MailboxUpdate,
    QuarantineRead,
    ReprocessResult,
)
from keepdesk.web.schema import CursorQuery, IdPath, ListPage, error_responses

router = APIRouter(responses=error_responses(401, 403, 422, 503))


@router.get("/mailboxes", tags=["mailboxes"], summary="Mailboxes with their fetch log")
async def list_mailboxes(
    session: Session, actor: ApiActor, runtime: RuntimeDep
) -> ListPage[MailboxRead]:
    require_admin(actor)
    boxes = await mailboxes.list_mailboxes(session)
    return ListPage(items=[MailboxRead.of(b, runtime.secret) for b in boxes], next_cursor=None)


@router.post(
    "/mailboxes",
    tags=["mailboxes"],
    status_code=201,
    summary="Add a mailbox",
    responses=error_responses(409),
)
async def add_mailbox(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: MailboxCreate
) -> MailboxRead:
    require_admin(actor)
    box = await mailboxes.add_mailbox(
        session,
        by=actor.audit,
        address=body.address,
        imap_url=body.imap_url,
        smtp_url=body.smtp_url,
        secret=runtime.secret,
        now=runtime.clock.now(),
        team_id=body.team_id,
        display_name=body.display_name,
        processed_action=body.processed_action,
        processed_folder=body.processed_folder,
        quarantine_folder=body.quarantine_folder,
        allow_plaintext=body.allow_plaintext,
        auto_ack=body.auto_ack,
    )
    await session.commit()
    return MailboxRead.of(box, runtime.secret)


@router.get("/mailboxes/{mailbox_id}", tags=["mailboxes"], responses=error_responses(404))
async def get_mailbox(
    session: Session, actor: ApiActor, runtime: RuntimeDep, mailbox_id: IdPath
) -> MailboxRead:
    require_admin(actor)
    return MailboxRead.of(await mailboxes.get_mailbox(session, mailbox_id), runtime.secret)


@router.patch("/mailboxes/{mailbox_id}", tags=["mailboxes"], responses=error_responses(404))
async def update_mailbox(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    mailbox_id: IdPath,
    body: MailboxUpdate,
) -> MailboxRead:
    box = await mailboxes.update_mailbox(
        session,
        actor=actor,
        mailbox_id=mailbox_id,
        now=runtime.clock.now(),
        is_active=body.is_active,
        auto_ack=body.auto_ack,
        team_id=body.team_id,
        display_name=body.display_name,
    )
    await session.commit()
    return MailboxRead.of(box, runtime.secret)


@router.get("/quarantine", tags=["quarantine"], summary="Mail that could not be processed")
async def list_quarantine(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    status: Annotated[QuarantineStatus | None, Query()] = QuarantineStatus.held,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ListPage[QuarantineRead]:
    page = await quarantine_service.list_quarantine(
        session, actor=actor, status=status, cursor=cursor, limit=limit
    )
    return ListPage(items=[QuarantineRead.of(i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/quarantine/{item_id}", tags=["quarantine"], responses=error_responses(404))
async def get_quarantined(session: Session, actor: ApiActor, item_id: IdPath) -> QuarantineRead:
    return QuarantineRead.of(
        await quarantine_service.get_quarantined(session, actor=actor, item_id=item_id)
    )


@router.get(
    "/quarantine/{item_id}/raw",
    tags=["quarantine"],
    responses=error_responses(404),
    summary="The mail's raw bytes, exactly as received (message/rfc822 download)",
)
async def download_quarantined(
    session: Session, actor: ApiActor, runtime: RuntimeDep, item_id: IdPath
) -> Response:
    item = await quarantine_service.get_quarantined(session, actor=actor, item_id=item_id)
    return Response(
        runtime.blobs.get(item.blob_key),
        media_type="application/octet-stream",
        headers=quarantine_service.download_headers(item),
    )


@router.post(
    "/quarantine/{item_id}/reprocess", tags=["quarantine"], responses=error_responses(404, 409)
)
async def reprocess(
    session: Session, actor: ApiActor, runtime: RuntimeDep, item_id: IdPath
) -> ReprocessResult:
    result = await quarantine_service.reprocess(
        session, actor=actor, item_id=item_id, runtime=runtime, now=runtime.clock.now()
    )
    await session.commit()
    return ReprocessResult(
        outcome=result.outcome.value,
        reason=result.reason,
        ticket_number=result.ticket_number,
        quarantine_id=result.quarantine_id,
    )


@router.post(
    "/quarantine/{item_id}/discard", tags=["quarantine"], responses=error_responses(404, 409)
)
async def discard(
    session: Session, actor: ApiActor, runtime: RuntimeDep, item_id: IdPath
) -> QuarantineRead:
    item = await quarantine_service.discard(
        session, actor=actor, item_id=item_id, now=runtime.clock.now()
    )
    await session.commit()
    return QuarantineRead.of(item)
