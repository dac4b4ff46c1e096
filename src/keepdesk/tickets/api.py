"""REST routes for tickets, their messages, history and attachments: thin adapters."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse

from keepdesk.accounts.dependencies import ApiActor, RuntimeDep, Session
from keepdesk.errors import InvalidInput
from keepdesk.outbox import service as outbox
from keepdesk.runtime import Runtime
from keepdesk.tickets import queries, search
from keepdesk.tickets import service as tickets
from keepdesk.tickets.downloads import attachment_response
from keepdesk.tickets.models import Channel, MessageKind, Priority, Ticket, TicketStatus
from keepdesk.tickets.policy import TicketPolicy
from keepdesk.tickets.schemas import (
    EventRead,
    MessageCreate,
    MessageCreated,
    MessageRead,
    TagRead,
    TicketCreate,
    TicketRead,
    TicketUpdate,
    ticket_rows_json,
)
from keepdesk.web.schema import (
    CursorQuery,
    IdPath,
    ListPage,
    NumberPath,
    Text,
    error_responses,
    page_response,
)

router = APIRouter(tags=["tickets"], responses=error_responses(401, 422, 503))
Limit = Annotated[int | None, Query(ge=1, le=1000, description="Page size (default 25).")]
IfMatch = Annotated[
    str | None,
    Header(description='The ticket version you read, e.g. `"3"`; a stale one gets 409.'),
]
_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


def _limit(runtime: Runtime, limit: int | None) -> int:
    return min(limit or runtime.settings.api_page_size, runtime.settings.api_max_page_size)


def _policy(runtime: Runtime) -> TicketPolicy:
    return TicketPolicy.from_runtime(runtime)


def _expected_version(if_match: str | None, body_version: int | None) -> int | None:
    if if_match is None:
        return body_version
    match = _IF_MATCH.match(if_match)
    if match is None:
        raise InvalidInput('If-Match must be a ticket version such as "3"', code="bad_if_match")
    return int(match.group(1))


async def _read(session: Session, actor: ApiActor, number: int) -> TicketRead:
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    return _ticket_read(ticket)


def _ticket_read(ticket: Ticket) -> TicketRead:
    return TicketRead.of(
        ticket, follow_up_of=ticket.follow_up_of.number if ticket.follow_up_of else None
    )


def _etag(response: Response, ticket: TicketRead) -> None:
    response.headers["ETag"] = f'"{ticket.version}"'


@router.get(
    "/tickets",
    summary="List tickets you may see, newest activity first",
    response_model=ListPage[TicketRead],
)
async def list_tickets(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    status: Annotated[list[TicketStatus] | None, Query(description="Repeat for several.")] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    channel: Annotated[list[Channel] | None, Query()] = None,
    assignee: Annotated[
        Text | None, Query(max_length=12, description="`me`, `none`, or an agent id.")
    ] = None,
    team: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="Team id.")] = None,
    tag: Annotated[Text | None, Query(max_length=60)] = None,
    requester: Annotated[
        Text | None, Query(max_length=320, description="Contact id or email address.")
    ] = None,
    updated_since: Annotated[
        datetime | None, Query(description="ISO 8601 with a timezone.")
    ] = None,
    sort: Annotated[
        queries.TicketSort,
        Query(description="`-updated_at` (default), `updated_at`, `-created_at` or `created_at`."),
    ] = queries.TicketSort.updated_desc,
    cursor: CursorQuery = None,
    limit: Limit = None,
) -> Response:
    if updated_since is not None and updated_since.tzinfo is None:
        raise InvalidInput(
            "updated_since needs a timezone, e.g. 2026-01-31T12:00:00Z", code="naive_datetime"
        )
    filters = queries.TicketFilter(
        statuses=tuple(status or ()),
        priorities=tuple(priority or ()),
        channels=tuple(channel or ()),
        assignee=assignee,
        team_id=team,
        tag=tag,
        requester=requester,
        updated_since=updated_since,
    )
    page = await queries.list_tickets(
        session,
        actor=actor,
        filters=filters,
        sort=sort,
        cursor=cursor,
        limit=_limit(runtime, limit),
    )
    return page_response(ticket_rows_json(page.items), page.next_cursor)


@router.get(
    "/search",
    summary="Search tickets you may see by word, newest first",
    response_model=ListPage[TicketRead],
)
async def search_tickets(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    q: Annotated[
        Text,
        Query(
            min_length=1,
            max_length=500,
            description="Words to find in the subject, the messages or the requester's address "
            "and name; every word must occur. Punctuation separates words; no operators.",
        ),
    ],
    cursor: CursorQuery = None,
    limit: Limit = None,
) -> Response:
    page = await search.search_tickets(
        session, actor=actor, query=q, cursor=cursor, limit=_limit(runtime, limit)
    )
    return page_response(ticket_rows_json(page.items), page.next_cursor)


@router.post(
    "/tickets",
    status_code=201,
    summary="Open a ticket for a customer",
    responses=error_responses(404),
)
async def create_ticket(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: TicketCreate, response: Response
) -> TicketRead:
    ticket = await tickets.open_ticket(
        session,
        actor=actor,
        subject=body.subject,
        body=body.body,
        body_html=body.body_html,
        requester_email=body.requester.email,
        requester_name=body.requester.name,
        priority=body.priority,
        team_id=body.team_id,
        tags=body.tags,
        channel=Channel(body.channel),
        attachments=[a.to_new() for a in body.attachments],
        now=runtime.clock.now(),
        blobs=runtime.blobs,
        policy=_policy(runtime),
    )
    number = ticket.number
    await session.commit()
    # Filed for another team, the ticket may be out of the actor's sight: still answer 201.
    result = _ticket_read(await queries.get_ticket_after_change(session, number=number))
    response.headers["Location"] = f"/api/v1/tickets/{number}"
    _etag(response, result)
    return result


@router.get("/tickets/{number}", summary="One ticket", responses=error_responses(404))
async def get_ticket(
    session: Session, actor: ApiActor, number: NumberPath, response: Response
) -> TicketRead:
    result = await _read(session, actor, number)
    _etag(response, result)
    return result


@router.patch(
    "/tickets/{number}",
    summary="Change status, priority, assignee, team or tags",
    responses=error_responses(404, 409),
)
async def update_ticket(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    number: NumberPath,
    body: TicketUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> TicketRead:
    fields = body.model_fields_set
    changes = tickets.TicketChanges(
        status=body.status,
        priority=body.priority,
        assignee_id=body.assignee_id if "assignee_id" in fields else tickets.UNSET,
        team_id=body.team_id if "team_id" in fields else tickets.UNSET,
        tags=body.tags,
    )
    await tickets.update_ticket(
        session,
        actor=actor,
        number=number,
        changes=changes,
        now=runtime.clock.now(),
        expected_version=_expected_version(if_match, body.version),
    )
    await session.commit()
    # Handed to another team, the ticket may be out of the actor's sight: still answer 200.
    result = _ticket_read(await queries.get_ticket_after_change(session, number=number))
    _etag(response, result)
    return result


@router.get(
    "/tickets/{number}/messages",
    summary="The conversation, oldest first",
    responses=error_responses(404),
)
async def list_messages(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    number: NumberPath,
    cursor: CursorQuery = None,
    limit: Limit = None,
) -> ListPage[MessageRead]:
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    page = await queries.list_messages(
        session, ticket=ticket, cursor=cursor, limit=_limit(runtime, limit)
    )
    deliveries = await outbox.deliveries_for_messages(session, [m.id for m in page.items])
    return ListPage(
        items=[MessageRead.of(m, deliveries.get(m.id)) for m in page.items],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/tickets/{number}/messages",
    status_code=201,
    summary="Reply to the customer or add an internal note",
    responses=error_responses(404, 409),
)
async def create_message(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    number: NumberPath,
    body: MessageCreate,
    if_match: IfMatch = None,
) -> MessageCreated:
    _, message = await tickets.add_agent_message(
        session,
        actor=actor,
        number=number,
        kind=MessageKind(body.kind),
        body=body.body,
        body_html=body.body_html,
        attachments=[a.to_new() for a in body.attachments],
        now=runtime.clock.now(),
        blobs=runtime.blobs,
        policy=_policy(runtime),
        expected_version=_expected_version(if_match, None),
    )
    message_id = message.id
    await session.commit()
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    stored = await queries.get_message(session, ticket=ticket, message_id=message_id)
    deliveries = await outbox.deliveries_for_messages(session, [message_id])
    return MessageCreated(
        message=MessageRead.of(stored, deliveries.get(message_id)), ticket=_ticket_read(ticket)
    )


@router.get(
    "/tickets/{number}/events",
    summary="The ticket's history: every change, in order",
    responses=error_responses(404),
)
async def list_events(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    number: NumberPath,
    cursor: CursorQuery = None,
    limit: Limit = None,
) -> ListPage[EventRead]:
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    page = await queries.list_events(
        session, ticket=ticket, cursor=cursor, limit=_limit(runtime, limit)
    )
    return ListPage(items=[EventRead.of(e) for e in page.items], next_cursor=page.next_cursor)


@router.get(
    "/tickets/{number}/attachments/{attachment_id}",
    summary="Download an attachment",
    response_class=FileResponse,
    responses={**error_responses(404), 200: {"content": {"application/octet-stream": {}}}},
)
async def download_attachment(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    number: NumberPath,
    attachment_id: IdPath,
) -> FileResponse:
    ticket = await queries.get_visible_ticket(session, actor=actor, number=number)
    attachment = await queries.get_attachment(session, ticket=ticket, attachment_id=attachment_id)
    return attachment_response(runtime.blobs, attachment)


@router.get("/tags", summary="Tags in use, by name", tags=["tags"])
async def list_tags(
    session: Session,
    actor: ApiActor,
    prefix: Annotated[Text | None, Query(max_length=60)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ListPage[TagRead]:
    tags = await queries.list_tags(session, prefix=prefix, limit=limit)
    return ListPage(items=[TagRead(name=t.name) for t in tags], next_cursor=None)
