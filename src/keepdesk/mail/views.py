"""Administrators' pages for mail: mailboxes (add, switch on and off, test the connection)
and quarantined mail (look, download, re-process, discard). Adapters over `mailboxes`,
`probes` and `quarantine`; passwords never reach a page (`MailboxRead` masks them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.browser import AdminBrowser, PageBrowser
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.errors import Conflict, InvalidInput, KeepdeskError
from keepdesk.mail import mailboxes, moves, probes
from keepdesk.mail import quarantine as quarantine_service
from keepdesk.mail.models import QuarantineStatus
from keepdesk.mail.schemas import MailboxRead
from keepdesk.runtime import Runtime
from keepdesk.tickets.policy import TicketPolicy
from keepdesk.web.pages import PagesDep, is_htmx
from keepdesk.web.schema import IdPath, NumberPath, Text

TEMPLATES = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)

FormText = Annotated[Text, Form(max_length=2000)]
_QUARANTINE_PAGE = 100


def _status(exc: KeepdeskError) -> int:
    return 409 if isinstance(exc, Conflict) else 422


# --- mailboxes --------------------------------------------------------------------------------


async def _mailboxes_page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    pages: PagesDep,
    *,
    fragment: str | None = "mailboxes",
    notice: str | None = None,
    problem: KeepdeskError | None = None,
    report: probes.ConnectionReport | None = None,
) -> Response:
    teams = await accounts.list_teams(session)
    boxes = await mailboxes.list_mailboxes(session)
    context: dict[str, Any] = {
        "mailboxes": [MailboxRead.of(box, runtime.secret) for box in boxes],
        "teams": teams,
        "team_names": {t.id: t.name for t in teams},
        "now": runtime.clock.now(),
        "notice": notice,
        "problem": problem.message if problem else None,
        "reports": {report.mailbox_id: report} if report else {},
        "report": report,
    }
    return pages.render(
        request,
        "mail/mailboxes.html",
        context,
        fragment=fragment,
        status_code=_status(problem) if problem else 200,
    )


@router.get("/admin/mailboxes")
async def mailboxes_page(
    request: Request, session: Session, runtime: RuntimeDep, pages: PagesDep, _admin: AdminBrowser
) -> Response:
    return await _mailboxes_page(request, session, runtime, pages)


@router.post("/admin/mailboxes")
async def add_mailbox(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    address: FormText,
    imap_url: FormText,
    smtp_url: FormText,
    team_id: Annotated[str, Form(max_length=20)] = "",
    auto_ack: Annotated[bool, Form()] = False,
    allow_plaintext: Annotated[bool, Form()] = False,
) -> Response:
    try:
        if team_id and not team_id.isdigit():
            raise InvalidInput("choose a team from the list", code="unknown_team")
        box = await mailboxes.add_mailbox(
            session,
            by=browser.actor.audit,
            address=address,
            imap_url=imap_url,
            smtp_url=smtp_url,
            secret=runtime.secret,
            now=runtime.clock.now(),
            team_id=int(team_id) if team_id else None,
            auto_ack=auto_ack,
            allow_plaintext=allow_plaintext,
        )
    except (InvalidInput, Conflict) as exc:
        await session.rollback()
        return await _mailboxes_page(request, session, runtime, pages, problem=exc)
    address = box.address
    await session.commit()
    return await _mailboxes_page(
        request, session, runtime, pages, notice=f"{address} is added; it is fetched from now on."
    )


@router.post("/admin/mailboxes/{mailbox_id}/active")
async def set_mailbox_active(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    mailbox_id: IdPath,
    is_active: Annotated[bool, Form()],
) -> Response:
    box = await mailboxes.update_mailbox(
        session,
        actor=browser.actor,
        mailbox_id=mailbox_id,
        now=runtime.clock.now(),
        is_active=is_active,
    )
    notice = f"{box.address} is {'active' if is_active else 'switched off'}."
    await session.commit()
    return await _mailboxes_page(request, session, runtime, pages, notice=notice)


@router.post("/admin/mailboxes/{mailbox_id}/test")
async def test_mailbox(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    mailbox_id: IdPath,
) -> Response:
    box_id, imap, outgoing = await probes.servers_to_check(
        session, actor=browser.actor, mailbox_id=mailbox_id, secret=runtime.secret
    )
    # End the transaction before talking to the servers (on SQLite it holds the write lock).
    await session.commit()
    report = await probes.check_servers(box_id, imap, outgoing)
    if is_htmx(request):
        return pages.render(
            request, "mail/mailboxes.html", {"report": report}, fragment="connection_test"
        )
    return await _mailboxes_page(request, session, runtime, pages, fragment=None, report=report)


# --- quarantine -------------------------------------------------------------------------------


@router.get("/admin/quarantine")
async def quarantine_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
) -> Response:
    page = await quarantine_service.list_quarantine(
        session,
        actor=browser.actor,
        status=QuarantineStatus.held,
        cursor=None,
        limit=_QUARANTINE_PAGE,
    )
    context = {
        "items": page.items,
        "more": page.next_cursor is not None,
        "now": runtime.clock.now(),
    }
    return pages.render(request, "mail/quarantine.html", context, fragment="quarantine")


@router.get("/admin/quarantine/{item_id}")
async def quarantined_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    item_id: IdPath,
) -> Response:
    item = await quarantine_service.get_quarantined(session, actor=browser.actor, item_id=item_id)
    context = {"item": item, "now": runtime.clock.now(), "result": None}
    return pages.render(request, "mail/quarantined.html", context, fragment="item")


@router.get("/admin/quarantine/{item_id}/raw")
async def download_quarantined(
    session: Session, runtime: RuntimeDep, browser: AdminBrowser, item_id: IdPath
) -> Response:
    item = await quarantine_service.get_quarantined(session, actor=browser.actor, item_id=item_id)
    return Response(
        runtime.blobs.get(item.blob_key),
        media_type="application/octet-stream",
        headers=quarantine_service.download_headers(item),
    )


@router.post("/admin/quarantine/{item_id}/reprocess")
async def reprocess(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    item_id: IdPath,
) -> Response:
    result = await quarantine_service.reprocess(
        session, actor=browser.actor, item_id=item_id, runtime=runtime, now=runtime.clock.now()
    )
    await session.commit()
    item = await quarantine_service.get_quarantined(session, actor=browser.actor, item_id=item_id)
    context = {"item": item, "now": runtime.clock.now(), "result": result}
    return pages.render(request, "mail/quarantined.html", context, fragment="item")


@router.post("/admin/quarantine/{item_id}/discard")
async def discard(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    item_id: IdPath,
) -> Response:
    await quarantine_service.discard(
        session, actor=browser.actor, item_id=item_id, now=runtime.clock.now()
    )
    await session.commit()
    if is_htmx(request):
        return Response(headers={"HX-Redirect": "/admin/quarantine"})
    return RedirectResponse("/admin/quarantine", status_code=303)


@router.post("/tickets/{number}/messages/{message_id}/split")
async def split_message(
    session: Session,
    runtime: RuntimeDep,
    browser: PageBrowser,
    number: NumberPath,
    message_id: IdPath,
) -> Response:
    """'Split into a new ticket' on a customer's message: then open the new ticket."""
    new = await moves.split_message(
        session,
        actor=browser.actor,
        number=number,
        message_id=message_id,
        now=runtime.clock.now(),
        policy=TicketPolicy.from_runtime(runtime),
    )
    target = f"/tickets/{new.number}"
    await session.commit()
    return RedirectResponse(target, status_code=303, headers={"HX-Redirect": target})
