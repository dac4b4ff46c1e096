"""The mentioned agent's page: notes that name it, unread first; the count in the navigation."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from keepdesk.accounts.browser import PageBrowser
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.tickets import mentions
from keepdesk.web.pages import PagesDep, is_htmx
from keepdesk.web.schema import IdPath

router = APIRouter(include_in_schema=False)

PAGE = "/mentions"
# The navigation asks for only the count, by targeting its element.
COUNT_TARGET = "mention_count"


@router.get(PAGE)
async def mentions_page(
    request: Request, session: Session, runtime: RuntimeDep, pages: PagesDep, browser: PageBrowser
) -> Response:
    actor = browser.actor
    unread = await mentions.count_unread(session, actor=actor)
    if is_htmx(request) and request.headers.get("hx-target") == COUNT_TARGET:
        return pages.render(
            request, "tickets/mentions.html", {"unread": unread}, fragment="mention_count"
        )
    items = await mentions.list_mentions(session, actor=actor)
    context = {"items": items, "unread": unread, "now": runtime.clock.now()}
    return pages.render(request, "tickets/mentions.html", context)


@router.post("/mentions/{mention_id}/open")
async def open_mention(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    browser: PageBrowser,
    mention_id: IdPath,
) -> Response:
    number = await mentions.open_mention(
        session, actor=browser.actor, mention_id=mention_id, now=runtime.clock.now()
    )
    await session.commit()
    url = f"/tickets/{number}"
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
