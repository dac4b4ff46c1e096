"""The ticket page: the conversation, the side panel changed in place, the composer, and the
authorised endpoints behind them (a message's sandboxed HTML, attachment downloads).

What the conversation shows, and how a message's HTML is served, is in `conversation.py`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor
from keepdesk.accounts.browser import Browser, PageBrowser
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.errors import Conflict, InvalidInput, KeepdeskError
from keepdesk.runtime import Runtime
from keepdesk.tickets import conversation, macros, queries
from keepdesk.tickets import service as tickets
from keepdesk.tickets.attachments import NewAttachment
from keepdesk.tickets.downloads import attachment_response
from keepdesk.tickets.models import (
    MessageKind,
    Priority,
    Ticket,
    TicketStatus,
)
from keepdesk.tickets.policy import TicketPolicy
from keepdesk.tickets.schemas import MAX_ATTACHMENTS, MAX_BODY
from keepdesk.web import nav
from keepdesk.web.pages import Pages, PagesDep, is_htmx
from keepdesk.web.schema import MAX_ID, IdPath, NumberPath, Text

router = APIRouter(include_in_schema=False)


def _mail_facts_loader(request: Request) -> conversation.MailFactsLoader:
    # Set by app.py: tickets cannot import mail.
    loader: conversation.MailFactsLoader = getattr(
        request.app.state, "mail_facts", conversation.no_mail_facts
    )
    return loader


# --- the page -----------------------------------------------------------------------------------


def _policy(runtime: Runtime) -> TicketPolicy:
    return TicketPolicy.from_runtime(runtime)


async def _context(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    browser: Browser,
    ticket: Ticket,
    *,
    seen_version: int,
    timeline: bool = True,
    panel: bool = True,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "ticket": ticket,
        "number": ticket.number,
        "now": runtime.clock.now(),
        "seen_version": seen_version,
        "statuses": list(TicketStatus),
        "priorities": list(Priority),
        "conflict": None,
        "problem": None,
        "panel_problem": None,
        "draft": "",
        "draft_kind": "reply",
        "images": None,
    }
    if timeline:
        items, truncated = await conversation.timeline(session, ticket, _mail_facts_loader(request))
        context.update(items=items, truncated=truncated)
    if panel:
        context.update(
            others=await queries.list_requester_tickets(
                session, actor=browser.actor, ticket=ticket
            ),
            teams=await browser.teams(session),
            assignable=await tickets.assignable_agents(session, ticket),
        )
    if timeline and panel:
        # The composer's macro picker is part of the ticket body.
        context["macros"] = await macros.list_macros(session)
    return context


# Which blocks answer an HTMX request, by the element it targets.
_FRAGMENTS = {
    "conversation": ("conversation", "version_oob", "warning_clear_oob"),
    "ticket_body": ("ticket_body",),
    "side_panel": ("side_panel", "ticket_head_oob", "version_oob"),
}


def _render(
    pages: Pages, request: Request, context: dict[str, Any], target: str, **kwargs: Any
) -> Response:
    return pages.render(
        request, "tickets/ticket.html", context, fragment=_FRAGMENTS[target], **kwargs
    )


@router.get("/tickets/{number}")
async def ticket_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    number: NumberPath,
    images: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    ticket = await queries.get_visible_ticket(session, actor=browser.actor, number=number)
    target = request.headers.get("hx-target", "")
    target = target if target in _FRAGMENTS else "ticket_body"
    context = await _context(
        request,
        session,
        runtime,
        browser,
        ticket,
        seen_version=ticket.version,
        panel=target != "conversation",
    )
    context["images"] = images
    return _render(pages, request, context, target)


@router.get("/tickets/{number}/messages/{message_id}/body")
async def message_body(
    session: Session,
    runtime: RuntimeDep,
    browser: PageBrowser,
    number: NumberPath,
    message_id: IdPath,
    remote_images: Annotated[bool, Query()] = False,
) -> Response:
    """A message's sanitised HTML as a document of its own, for the page's sandboxed iframe."""
    ticket = await queries.get_visible_ticket(session, actor=browser.actor, number=number)
    message = await queries.get_message(session, ticket=ticket, message_id=message_id)
    document, csp = conversation.framed_body(runtime.blobs, message, remote_images=remote_images)
    return Response(
        document,
        media_type="text/html",
        headers={
            "Content-Security-Policy": csp,
            # Framed by our own ticket page only (the layout's headers forbid all framing).
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/tickets/{number}/attachments/{attachment_id}")
async def download_attachment(
    session: Session,
    runtime: RuntimeDep,
    browser: PageBrowser,
    number: NumberPath,
    attachment_id: IdPath,
) -> FileResponse:
    ticket = await queries.get_visible_ticket(session, actor=browser.actor, number=number)
    attachment = await queries.get_attachment(session, ticket=ticket, attachment_id=attachment_id)
    return attachment_response(runtime.blobs, attachment)


# --- the side panel ------------------------------------------------------------------------------

FieldText = Annotated[Text | None, Form(max_length=200)]


def _field_changes(
    actor: Actor,
    *,
    status: str | None,
    orig_status: str | None,
    priority: str | None,
    orig_priority: str | None,
    team: str | None,
    orig_team: str | None,
    assignee: str | None,
    orig_assignee: str | None,
    tags: str | None,
    orig_tags: str | None,
) -> tickets.TicketChanges:
    """Only what the agent changed in the form: a field still showing the value the panel was
    drawn with stays untouched, so a stale panel cannot undo someone else's change."""

    def changed(value: str | None, orig: str | None) -> bool:
        return value is not None and value != orig

    def ref(value: str, what: str) -> int | None:
        if value in ("", "none"):
            return None
        if value == "me" and what == "agent":
            return actor.agent_id
        if not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_ID:
            raise InvalidInput(f"{what} must be an id", code="bad_field")
        return int(value)

    try:
        return tickets.TicketChanges(
            status=TicketStatus(status) if changed(status, orig_status) and status else None,
            priority=Priority(priority) if changed(priority, orig_priority) and priority else None,
            team_id=ref(team or "", "team") if changed(team, orig_team) else tickets.UNSET,
            assignee_id=ref(assignee or "", "agent")
            if changed(assignee, orig_assignee)
            else tickets.UNSET,
            tags=[t for t in re.split(r"[,\s]+", tags or "") if t]
            if changed(tags, orig_tags)
            else None,
        )
    except ValueError:
        raise InvalidInput("that value is not one of the choices", code="bad_field") from None


@router.post("/tickets/{number}/properties")
async def change_properties(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    number: NumberPath,
    expected_version: Annotated[int | None, Form(ge=0)] = None,
    status: FieldText = None,
    orig_status: FieldText = None,
    priority: FieldText = None,
    orig_priority: FieldText = None,
    team: FieldText = None,
    orig_team: FieldText = None,
    assignee: FieldText = None,
    orig_assignee: FieldText = None,
    tags: Annotated[Text | None, Form(max_length=2000)] = None,
    orig_tags: Annotated[Text | None, Form(max_length=2000)] = None,
) -> Response:
    actor = browser.actor
    before = await queries.get_visible_ticket(session, actor=actor, number=number)
    version_before = before.version
    problem = None
    try:
        changes = _field_changes(
            actor,
            status=status,
            orig_status=orig_status,
            priority=priority,
            orig_priority=orig_priority,
            team=team,
            orig_team=orig_team,
            assignee=assignee,
            orig_assignee=orig_assignee,
            tags=tags,
            orig_tags=orig_tags,
        )
        async with session.begin_nested():
            await tickets.update_ticket(
                session, actor=actor, number=number, changes=changes, now=runtime.clock.now()
            )
    except KeepdeskError as exc:
        problem = exc.message
    await session.commit()
    # Read the ticket afresh: its relationships (assignee, team) still show the old rows.
    session.expire_all()
    ticket = await queries.find_visible_ticket(session, actor=actor, number=number)
    if ticket is None:
        # Handed to a team the agent is not in: the ticket is out of their sight now.
        if is_htmx(request):
            return Response(status_code=200, headers={"HX-Redirect": nav.HOME})
        return RedirectResponse(nav.HOME, status_code=303)
    if not is_htmx(request):
        return RedirectResponse(f"/tickets/{number}", status_code=303)
    # The composer keeps warning about changes made by others: only when the panel was drawn
    # at the version the composer saw does the agent's own change move the composer along.
    seen = expected_version if expected_version is not None else version_before
    if seen == version_before:
        seen = ticket.version
    context = await _context(
        request, session, runtime, browser, ticket, seen_version=seen, timeline=False
    )
    context["panel_problem"] = problem
    return _render(pages, request, context, "side_panel")


# --- the composer ------------------------------------------------------------------------------


@router.post("/tickets/{number}/messages")
async def add_message(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    number: NumberPath,
    kind: Annotated[Text, Form(max_length=10)] = "reply",
    body: Annotated[Text, Form(max_length=MAX_BODY)] = "",
    expected_version: Annotated[int | None, Form(ge=0)] = None,
    force: Annotated[int | None, Form(ge=0)] = None,
    attachments: Annotated[list[UploadFile], File()] = [],  # noqa: B006 - FastAPI copies it
) -> Response:
    actor = browser.actor
    # A ticket the agent may not see is "not found", before anything else is looked at.
    await queries.get_visible_ticket(session, actor=actor, number=number)
    try:
        if len(attachments) > MAX_ATTACHMENTS:
            raise InvalidInput(f"attach at most {MAX_ATTACHMENTS} files to one message")
        message_kind = MessageKind(kind)
        files = [
            NewAttachment(
                filename=f.filename,
                content_type=f.content_type or "application/octet-stream",
                data=await f.read(),
            )
            for f in attachments
            if f.filename or f.size
        ]
        async with session.begin_nested():
            await tickets.add_agent_message(
                session,
                actor=actor,
                number=number,
                kind=message_kind,
                body=body,
                attachments=files,
                now=runtime.clock.now(),
                blobs=runtime.blobs,
                policy=_policy(runtime),
                # "Send anyway" carries the version the agent was warned about.
                expected_version=force if force is not None else expected_version,
            )
    except (InvalidInput, Conflict, ValueError) as exc:
        return await _composer_problem(request, session, pages, actor, number, exc)
    await session.commit()
    if not is_htmx(request):
        return RedirectResponse(f"/tickets/{number}", status_code=303)
    session.expire_all()
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    context = await _context(
        request, session, runtime, browser, ticket, seen_version=ticket.version
    )
    return _render(pages, request, context, "ticket_body")


@router.post("/tickets/{number}/macro")
async def apply_macro(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    number: NumberPath,
    macro_id: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
    kind: Annotated[Text, Form(max_length=10)] = "reply",
    body: Annotated[Text, Form(max_length=MAX_BODY)] = "",
    expected_version: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    """The composer's "Apply macro": its changes are made to the ticket at once, its text is
    added to the draft, and the agent reads it over before sending."""
    actor = browser.actor
    before = await queries.get_visible_ticket(session, actor=actor, number=number)
    version_before = before.version
    text = ""
    if macro_id is not None:
        try:
            async with session.begin_nested():
                _, text = await macros.apply_macro(
                    session,
                    actor=actor,
                    number=number,
                    macro_id=macro_id,
                    now=runtime.clock.now(),
                )
        except (InvalidInput, Conflict) as exc:
            return await _composer_problem(request, session, pages, actor, number, exc)
        await session.commit()
        session.expire_all()
    ticket = await queries.find_visible_ticket(session, actor=actor, number=number)
    if ticket is None:
        # The macro handed the ticket to a team the agent is not in.
        if is_htmx(request):
            return Response(status_code=200, headers={"HX-Redirect": nav.HOME})
        return RedirectResponse(nav.HOME, status_code=303)
    # As for the side panel: the agent's own change does not count as a change by others.
    seen = expected_version if expected_version is not None else version_before
    if seen == version_before:
        seen = ticket.version
    context = await _context(request, session, runtime, browser, ticket, seen_version=seen)
    draft = body.rstrip()
    context["draft"] = f"{draft}\n\n{text}" if draft and text else draft or text
    context["draft_kind"] = "note" if kind == "note" else "reply"
    return _render(pages, request, context, "ticket_body")


async def _composer_problem(
    request: Request,
    session: AsyncSession,
    pages: Pages,
    actor: Actor,
    number: int,
    exc: Exception,
) -> Response:
    """The composer keeps the draft; a warning appears in it (the text and files stay put)."""
    conflict = None
    if isinstance(exc, Conflict) and exc.code == "version_conflict":
        ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
        conflict = ticket.version
        problem = None
        status = 409
    else:
        problem = (
            exc.message if isinstance(exc, KeepdeskError) else "that kind of message is unknown"
        )
        status = 409 if isinstance(exc, Conflict) else 422
    context = {"conflict": conflict, "problem": problem, "number": number}
    if not is_htmx(request):
        return pages.render(request, "tickets/composer_problem.html", context, status_code=status)
    return pages.render(
        request,
        "tickets/ticket.html",
        context,
        fragment="composer_warning",
        status_code=status,
        headers={"HX-Retarget": "#composer_warning", "HX-Reswap": "innerHTML"},
    )
