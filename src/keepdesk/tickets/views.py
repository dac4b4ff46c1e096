"""Queue pages: My tickets, Unassigned, each team, All; filters, "load more", bulk changes.

Thin adapters like the REST routes: parse the query, call `queries` and `service`, render
`tickets/queue.html` (or one of its blocks for HTMX). The ticket page is in `ticket_views.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm.exc import StaleDataError

from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor
from keepdesk.accounts.browser import Browser, PageBrowser
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.errors import InvalidInput, KeepdeskError, NotFound
from keepdesk.tickets import queries, search
from keepdesk.tickets import service as tickets
from keepdesk.tickets.models import Channel, Priority, TicketStatus
from keepdesk.tickets.queries import TicketFilter, TicketSort
from keepdesk.web import nav
from keepdesk.web.pages import PagesDep, is_htmx
from keepdesk.web.redirects import safe_next
from keepdesk.web.schema import MAX_ID, IdPath, Text

TEMPLATES = FilePath(__file__).parent / "templates"
PAGE_SIZE = 50
COUNT_CAP = 1000
MAX_BULK = 100
ACTIVE = (TicketStatus.new, TicketStatus.open, TicketStatus.pending)

router = APIRouter(include_in_schema=False)

Choice = Annotated[Text, Query(max_length=40)]
SORT_LABELS = {
    TicketSort.updated_desc: "Latest activity",
    TicketSort.updated_asc: "Oldest activity",
    TicketSort.created_desc: "Newest",
    TicketSort.created_asc: "Oldest",
}


@dataclass(frozen=True)
class QueueView:
    key: str
    title: str
    url: str
    base: TicketFilter


def _views(actor: Actor, teams: list[tuple[int, str]]) -> list[QueueView]:
    views = [
        QueueView("mine", "My tickets", nav.MINE, TicketFilter(assignee="me")),
        QueueView("unassigned", "Unassigned", nav.UNASSIGNED, TicketFilter(assignee="none")),
    ]
    views += [
        QueueView(f"team-{tid}", name, nav.team_queue(tid), TicketFilter(team_id=tid))
        for tid, name in teams
        if tid in actor.team_ids
    ]
    if actor.is_admin:
        views.append(QueueView("all", "All tickets", nav.ALL, TicketFilter()))
    return views


def _one_of(value: str, allowed: type[Any], what: str) -> Any:
    try:
        return allowed(value)
    except ValueError:
        raise InvalidInput(f"{value[:40]!r} is not a {what}", code="bad_filter") from None


def _id(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_ID:
        raise InvalidInput(f"{what} must be an id", code="bad_filter")
    return int(value)


@dataclass(frozen=True)
class QueueQuery:
    """The filter form's values as the agent chose them, and the filter they make."""

    status: str
    priority: str
    channel: str
    team: str
    assignee: str
    tag: str
    requester: str
    sort: TicketSort

    def filter(self, base: TicketFilter) -> TicketFilter:
        statuses: tuple[TicketStatus, ...] = ACTIVE
        if self.status == "any":
            statuses = ()
        elif self.status != "active":
            statuses = (_one_of(self.status, TicketStatus, "status"),)
        return TicketFilter(
            statuses=statuses,
            priorities=(_one_of(self.priority, Priority, "priority"),) if self.priority else (),
            channels=(_one_of(self.channel, Channel, "channel"),) if self.channel else (),
            assignee=base.assignee or (self.assignee or None),
            team_id=base.team_id or (_id(self.team, "team") if self.team else None),
            tag=self.tag or None,
            requester=self.requester or None,
        )


async def _queue_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    view: QueueView,
    views: list[QueueView],
    query: QueueQuery,
    cursor: str | None,
) -> Response:
    actor = browser.actor
    filters = query.filter(view.base)
    page = await queries.list_tickets(
        session, actor=actor, filters=filters, sort=query.sort, cursor=cursor, limit=PAGE_SIZE
    )
    next_url = None
    if page.next_cursor:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        next_url = f"{view.url}?{urlencode([*kept, ('cursor', page.next_cursor)])}"
    context: dict[str, Any] = {
        "view": view,
        "query": query,
        "tickets": page.items,
        "next_url": next_url,
        "now": runtime.clock.now(),
        "statuses": list(TicketStatus),
        "priorities": list(Priority),
        "channels": list(Channel),
        "sorts": SORT_LABELS,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    if cursor and is_htmx(request):
        # "Load more": only the next rows, appended in place of the button.
        return pages.render(request, "tickets/queue.html", context, fragment="rows")
    # This list's count and, on a whole page, the side list's: each queue's active tickets.
    side = [] if is_htmx(request) else views
    counts = await queries.count_each(
        session,
        actor=actor,
        filters=[filters, *(replace(v.base, statuses=ACTIVE) for v in side)],
        cap=COUNT_CAP,
    )
    context["count"] = counts[0]
    context["cap"] = COUNT_CAP
    context["agents"] = await accounts.active_agents(session)
    context["teams"] = await browser.teams(session)
    if side:
        context["views"] = list(zip(side, counts[1:], strict=True))
    return pages.render(request, "tickets/queue.html", context, fragment="queue_results")


async def _query_params(
    status: Choice = "active",
    priority: Choice = "",
    channel: Choice = "",
    team: Choice = "",
    assignee: Choice = "",
    tag: Annotated[Text, Query(max_length=60)] = "",
    requester: Annotated[Text, Query(max_length=320)] = "",
    sort: TicketSort = TicketSort.updated_desc,
) -> QueueQuery:
    return QueueQuery(
        status=status,
        priority=priority,
        channel=channel,
        team=team,
        assignee=assignee,
        tag=tag.strip(),
        requester=requester.strip(),
        sort=sort,
    )


QueueParams = Annotated[QueueQuery, Depends(_query_params)]
Cursor = Annotated[Text | None, Query(max_length=500)]


async def _team_names(session: Session, browser: Browser) -> list[tuple[int, str]]:
    return [(t.id, t.name) for t in await browser.teams(session)]


@router.get("/")
async def home(browser: PageBrowser) -> Response:
    return RedirectResponse(nav.HOME, status_code=303)


@router.get("/queue/team/{team_id}")
async def team_queue(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    team_id: IdPath,
    query: QueueParams,
    cursor: Cursor = None,
) -> Response:
    teams = await _team_names(session, browser)
    views = _views(browser.actor, teams)
    view = next((v for v in views if v.base.team_id == team_id), None)
    if view is None and browser.actor.is_admin:
        name = next((n for tid, n in teams if tid == team_id), None)
        if name is not None:
            base = TicketFilter(team_id=team_id)
            view = QueueView(f"team-{team_id}", name, nav.team_queue(team_id), base)
    if view is None:
        raise NotFound(f"no team queue {team_id}")
    return await _queue_page(request, session, runtime, pages, browser, view, views, query, cursor)


@router.get("/queue/{key}")
async def queue(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    key: Annotated[str, Path(max_length=20)],
    query: QueueParams,
    cursor: Cursor = None,
) -> Response:
    views = _views(browser.actor, await _team_names(session, browser))
    view = next((v for v in views if v.key == key and not v.key.startswith("team-")), None)
    if view is None:
        raise NotFound(f"no queue named {key[:20]!r}")
    return await _queue_page(request, session, runtime, pages, browser, view, views, query, cursor)


@router.get(nav.SEARCH)
async def search_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    q: Annotated[Text, Query(max_length=500)] = "",
    cursor: Cursor = None,
) -> Response:
    q = q.strip()
    context: dict[str, Any] = {
        "search_query": q,
        "tickets": [],
        "next_url": None,
        "problem": None,
        "now": runtime.clock.now(),
    }
    status_code = 200
    if q:
        try:
            page = await search.search_tickets(
                session, actor=browser.actor, query=q, cursor=cursor, limit=PAGE_SIZE
            )
        except InvalidInput as exc:
            if exc.code != "invalid_query":
                raise
            context["problem"], status_code = exc.message, 422
        else:
            context["tickets"] = page.items
            if page.next_cursor:
                more = urlencode([("q", q), ("cursor", page.next_cursor)])
                context["next_url"] = f"{nav.SEARCH}?{more}"
    if cursor and is_htmx(request):
        return pages.render(request, "tickets/search.html", context, fragment="rows")
    return pages.render(
        request, "tickets/search.html", context, fragment="search_results", status_code=status_code
    )


# --- bulk changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkResult:
    number: int
    ok: bool
    text: str


def _bulk_changes(op: str, actor: Actor) -> tuple[tickets.TicketChanges | None, str, str]:
    """The change a bulk operation makes (None for tags, which add to each ticket's own), and
    how to say it."""
    kind, _, value = op.partition(":")
    if kind == "assign":
        if value == "me":
            return tickets.TicketChanges(assignee_id=actor.agent_id), "assigned to you", ""
        if value == "none":
            return tickets.TicketChanges(assignee_id=None), "unassigned", ""
        return tickets.TicketChanges(assignee_id=_id(value, "agent")), "assigned", ""
    if kind == "status":
        status = _one_of(value, TicketStatus, "status")
        return tickets.TicketChanges(status=status), f"status set to {status}", ""
    if kind == "team":
        return tickets.TicketChanges(team_id=_id(value, "team")), "moved to the team", ""
    if kind == "tag":
        return None, "tagged", value
    raise InvalidInput("choose what to do with the selected tickets", code="bad_bulk_action")


@router.post("/queue/bulk")
async def bulk_change(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    numbers: Annotated[list[int], Form(max_length=MAX_BULK)] = [],  # noqa: B006 - FastAPI default
    op: Annotated[Text, Form(max_length=80)] = "",
    tag: Annotated[Text, Form(max_length=60)] = "",
    back: Annotated[Text, Form(max_length=2000)] = "",
) -> Response:
    actor = browser.actor
    if not numbers:
        raise InvalidInput("select at least one ticket first", code="nothing_selected")
    if tag.strip() and not op:
        op = "tag:"
    changes, done, tag_name = _bulk_changes(op, actor)
    if op.startswith("tag:"):
        tag_name = tag.strip()
        if not tag_name:
            raise InvalidInput("type the tag to add", code="bad_bulk_action")
    now = runtime.clock.now()
    results: list[BulkResult] = []
    for number in dict.fromkeys(n for n in numbers if 0 < n <= MAX_ID):
        try:
            # Each ticket on its own: one that fails does not undo the others.
            async with session.begin_nested():
                change = changes
                if change is None:
                    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
                    change = tickets.TicketChanges(tags=[*(t.name for t in ticket.tags), tag_name])
                await tickets.update_ticket(
                    session, actor=actor, number=number, changes=change, now=now
                )
            results.append(BulkResult(number, True, done))
        except KeepdeskError as exc:
            results.append(BulkResult(number, False, exc.message))
        except StaleDataError:
            results.append(BulkResult(number, False, "changed by someone else at the same moment"))
    await session.commit()
    context = {
        "results": results,
        "changed": sum(r.ok for r in results),
        "back": safe_next(back, default=nav.HOME),
    }
    response = pages.render(request, "tickets/bulk_result.html", context, fragment="bulk_result")
    # The queue's rows reload themselves on this event.
    response.headers["HX-Trigger"] = "queue-changed"
    return response
