"""REST shapes of tickets, messages, attachments and history events (DESIGN.md, REST v1)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from keepdesk.accounts.schemas import PersonRef, TeamRef
from keepdesk.outbox.service import Delivery
from keepdesk.tickets.attachments import NewAttachment
from keepdesk.tickets.models import (
    Channel,
    EventAction,
    Message,
    MessageKind,
    Priority,
    Ticket,
    TicketEvent,
    TicketStatus,
)
from keepdesk.tickets.rows import TicketRow
from keepdesk.web.schema import MAX_ID, ApiModel, Text

MAX_BODY = 500_000
MAX_SUBJECT = 998  # RFC 5322's line limit: the longest subject a mail can carry
MAX_ATTACHMENTS = 20
TagText = Annotated[Text, Field(max_length=60)]


class TicketRead(BaseModel):
    number: int = Field(description="The ticket's number, shown as #1042.")
    subject: str
    status: TicketStatus
    priority: Priority
    channel: Channel = Field(description="Where the request came in.")
    requester: PersonRef = Field(description="The customer (a contact).")
    team: TeamRef | None
    assignee: PersonRef | None = Field(description="The owning agent, or null when unassigned.")
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None = Field(description="When the first agent reply went out.")
    resolved_at: datetime | None
    closed_at: datetime | None
    follow_up_of: int | None = Field(
        description="For a follow-up opened by mail on a closed ticket: that ticket's number."
    )
    version: int = Field(description="Bumped by every change; send it back in `If-Match`.")

    @classmethod
    def of(cls, ticket: Ticket, *, follow_up_of: int | None = None) -> TicketRead:
        return cls(
            number=ticket.number,
            subject=ticket.subject,
            status=ticket.status,
            priority=ticket.priority,
            channel=ticket.channel,
            requester=PersonRef(
                id=ticket.requester.id, email=ticket.requester.email, name=ticket.requester.name
            ),
            team=TeamRef(id=ticket.team.id, name=ticket.team.name) if ticket.team else None,
            assignee=PersonRef(
                id=ticket.assignee.id, email=ticket.assignee.email, name=ticket.assignee.name
            )
            if ticket.assignee
            else None,
            tags=[t.name for t in ticket.tags],
            created_at=ticket.created_at,
            updated_at=ticket.updated_at,
            first_response_at=ticket.first_response_at,
            resolved_at=ticket.resolved_at,
            closed_at=ticket.closed_at,
            follow_up_of=follow_up_of,
            version=ticket.version,
        )


# A list row serialized as a `TicketRead` (the same fields in the same order, less the row's
# internal id), in one pass of pydantic-core over the page instead of a model per ticket.
_TICKET_ROWS = TypeAdapter(list[TicketRow])
_NOT_IN_READ = {"__all__": {"id"}}


def ticket_rows_json(rows: list[TicketRow]) -> bytes:
    """The JSON array of `TicketRead`s for these list rows."""
    return _TICKET_ROWS.dump_json(rows, exclude=_NOT_IN_READ)


class RequesterIn(ApiModel):
    email: Text = Field(max_length=320, min_length=3)
    name: Text = Field("", max_length=200)


class AttachmentIn(ApiModel):
    filename: Text = Field(max_length=1000, min_length=1)
    content_type: Text = Field("application/octet-stream", max_length=255)
    content_base64: str = Field(description="The file's bytes, base64-encoded.")

    @field_validator("content_base64")
    @classmethod
    def _valid_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        return value

    def to_new(self) -> NewAttachment:
        return NewAttachment(
            filename=self.filename,
            content_type=self.content_type,
            data=base64.b64decode(self.content_base64),
        )


class TicketCreate(ApiModel):
    subject: Text = Field(max_length=MAX_SUBJECT, min_length=1)
    body: Text = Field(max_length=MAX_BODY, description="The customer's request, plain text.")
    body_html: Text | None = Field(
        None, max_length=MAX_BODY, description="Optional HTML; sanitised before it is stored."
    )
    requester: RequesterIn
    priority: Priority = Priority.normal
    # Plain strings, so a wrong value is explained as "'api', 'web' or 'chat'".
    channel: Literal["api", "web", "chat"] = "api"
    team_id: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="Required unless you are an admin or belong to exactly one team.",
    )
    tags: list[TagText] = Field(default_factory=list, max_length=20)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class TicketUpdate(ApiModel):
    status: TicketStatus | None = None
    priority: Priority | None = None
    assignee_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="An agent id, or null to unassign."
    )
    team_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="A team id, or null for no team."
    )
    tags: list[TagText] | None = Field(None, max_length=20)
    version: int | None = Field(
        None, ge=1, description="The version you read; `If-Match` does the same."
    )


class AttachmentRead(BaseModel):
    id: int
    filename: str = Field(description="Safe display name; never a path.")
    content_type: str
    size: int = Field(description="Size in bytes.")


class AuthorRead(BaseModel):
    type: Literal["agent", "contact"]
    id: int
    email: str
    name: str


class DeliveryRead(BaseModel):
    status: str
    error: str | None


class MessageRead(BaseModel):
    id: int
    kind: MessageKind = Field(
        description="`customer` from the requester, `reply` to the customer, `note` internal, "
        "`system` from keepdesk."
    )
    author: AuthorRead | None
    body_text: str
    body_html: str | None = Field(description="Sanitised HTML, or null.")
    created_at: datetime
    attachments: list[AttachmentRead]
    delivery: DeliveryRead | None = Field(
        description="Mail delivery of a reply: `queued`, `sending`, `retrying`, `uncertain`, "
        "`sent` or `failed` (with the mail server's words in `error`); null for other kinds."
    )

    @classmethod
    def of(cls, message: Message, delivery: Delivery | None = None) -> MessageRead:
        author: AuthorRead | None = None
        if message.author_agent is not None:
            a = message.author_agent
            author = AuthorRead(type="agent", id=a.id, email=a.email, name=a.name)
        elif message.author_contact is not None:
            c = message.author_contact
            author = AuthorRead(type="contact", id=c.id, email=c.email, name=c.name)
        return cls(
            id=message.id,
            kind=message.kind,
            author=author,
            body_text=message.body_text,
            body_html=message.body_html,
            created_at=message.created_at,
            attachments=[
                AttachmentRead(
                    id=x.id, filename=x.filename, content_type=x.content_type, size=x.size
                )
                for x in message.attachments
            ],
            delivery=DeliveryRead(status=delivery.status.value, error=delivery.error)
            if delivery
            else None,
        )


class MessageCreate(ApiModel):
    kind: Literal["reply", "note"] = Field(
        description="`reply` goes to the customer; `note` stays internal."
    )
    body: Text = Field(max_length=MAX_BODY)
    body_html: Text | None = Field(None, max_length=MAX_BODY)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class MessageCreated(BaseModel):
    message: MessageRead
    ticket: TicketRead


class EventRead(BaseModel):
    id: int
    action: EventAction = Field(
        description="`created`, `changed` (one field), `message_added`, `follow_up_opened`."
    )
    field: str | None = Field(description="For `changed`: status, priority, assignee, team, tags.")
    before: Any
    after: Any
    actor: AuthorRead | None = Field(description="Who did it; null for keepdesk itself.")
    created_at: datetime

    @classmethod
    def of(cls, event: TicketEvent) -> EventRead:
        actor: AuthorRead | None = None
        if event.actor_agent is not None:
            a = event.actor_agent
            actor = AuthorRead(type="agent", id=a.id, email=a.email, name=a.name)
        elif event.actor_contact is not None:
            c = event.actor_contact
            actor = AuthorRead(type="contact", id=c.id, email=c.email, name=c.name)
        return cls(
            id=event.id,
            action=event.action,
            field=event.field,
            before=event.before,
            after=event.after,
            actor=actor,
            created_at=event.created_at,
        )


class TagRead(BaseModel):
    name: str
