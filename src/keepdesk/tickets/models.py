"""Ticket tables: tickets, messages, attachments, tags, the per-ticket event history, macros
(canned responses) and the @mentions of agents in internal notes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from keepdesk.accounts.models import Agent, Contact, Team
from keepdesk.db import Base, UTCDateTime, json_type


class TicketStatus(StrEnum):
    new = "new"
    open = "open"
    pending = "pending"
    resolved = "resolved"
    closed = "closed"


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Channel(StrEnum):
    email = "email"
    web = "web"
    chat = "chat"
    api = "api"


class MessageKind(StrEnum):
    customer = "customer"  # from the requester (mail, portal, chat, or typed in by an agent)
    reply = "reply"  # from an agent, to the customer
    note = "note"  # internal; never leaves keepdesk
    system = "system"  # written by keepdesk itself


class EventAction(StrEnum):
    created = "created"
    changed = "changed"  # one field, before -> after
    message_added = "message_added"
    follow_up_opened = "follow_up_opened"


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(cls, native_enum=False, length=16)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status_updated", "status", "updated_at", "id"),
        Index("ix_tickets_team_status_updated", "team_id", "status", "updated_at", "id"),
        # A team's queue by priority, and its count, from the index alone (migration 0004).
        Index(
            "ix_tickets_team_priority_status_updated",
            "team_id",
            "priority",
            "status",
            "updated_at",
            "id",
        ),
        # An agent's queue; the team last, so that the unassigned queue's count reads the
        # index alone (migration 0005).
        Index(
            "ix_tickets_assignee_status_updated",
            "assignee_id",
            "status",
            "updated_at",
            "id",
            "team_id",
        ),
        Index("ix_tickets_requester_created", "requester_id", "created_at"),
        Index("ix_tickets_updated", "updated_at", "id"),
        Index("ix_tickets_created", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    subject: Mapped[str] = mapped_column(String(1000))
    status: Mapped[TicketStatus] = mapped_column(_enum(TicketStatus))
    priority: Mapped[Priority] = mapped_column(_enum(Priority))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    requester_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="RESTRICT"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    # The mailbox the ticket came in on; replies leave through it.
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    follow_up_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped by every change, messages included; an UPDATE checks it (optimistic concurrency).
    version: Mapped[int] = mapped_column(Integer, default=1)

    requester: Mapped[Contact] = relationship(lazy="raise")
    team: Mapped[Team | None] = relationship(lazy="raise")
    assignee: Mapped[Agent | None] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(
        secondary="ticket_tags", lazy="raise", order_by="Tag.name"
    )
    follow_up_of: Mapped[Ticket | None] = relationship(remote_side=[id], lazy="raise")

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class TicketTag(Base):
    __tablename__ = "ticket_tags"
    __table_args__ = (Index("ix_ticket_tags_tag_ticket", "tag_id", "ticket_id"),)

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_ticket_id_id", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    kind: Mapped[MessageKind] = mapped_column(_enum(MessageKind))
    author_agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL")
    )
    author_contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    body_text: Mapped[str] = mapped_column(Text)
    # Already sanitised when stored: nothing renders unsanitised customer HTML.
    body_html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    author_agent: Mapped[Agent | None] = relationship(lazy="raise")
    author_contact: Mapped[Contact | None] = relationship(lazy="raise")
    attachments: Mapped[list[Attachment]] = relationship(
        lazy="raise", order_by="Attachment.id", back_populates="message"
    )

    @property
    def is_internal(self) -> bool:
        return self.kind in (MessageKind.note, MessageKind.system)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    # sha256 of the content: the blob store's key. Never derived from the file name.
    blob_key: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(Integer)
    # For images a mail's HTML shows in place (`cid:`); None for ordinary attachments.
    content_id: Mapped[str | None] = mapped_column(String(250))
    is_inline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    message: Mapped[Message] = relationship(back_populates="attachments", lazy="raise")


class TicketEvent(Base):
    __tablename__ = "ticket_events"
    __table_args__ = (Index("ix_ticket_events_ticket_id_id", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    actor_contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    action: Mapped[EventAction] = mapped_column(_enum(EventAction))
    field: Mapped[str | None] = mapped_column(String(32))
    before: Mapped[Any] = mapped_column(json_type(), nullable=True)
    after: Mapped[Any] = mapped_column(json_type(), nullable=True)

    actor_agent: Mapped[Agent | None] = relationship(lazy="raise")
    actor_contact: Mapped[Contact | None] = relationship(lazy="raise")


class Counter(Base):
    """Named counters handed out under a row lock: ticket numbers."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Macro(Base):
    """A canned response: a text with placeholders, and changes it makes to the ticket."""

    __tablename__ = "macros"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # A Jinja2 template run in a sandbox (tickets/macros.py); admins write it, never customers.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[TicketStatus | None] = mapped_column(_enum(TicketStatus), nullable=True)
    # Added to the ticket's tags; none removed.
    tags: Mapped[list[str]] = mapped_column(json_type(), default=list)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Mention(Base):
    """An agent named with @ in an internal note; read once the agent opens it."""

    __tablename__ = "mentions"
    __table_args__ = (
        UniqueConstraint("agent_id", "message_id"),
        Index("ix_mentions_agent_read", "agent_id", "read_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    message: Mapped[Message] = relationship(lazy="raise")
    ticket: Mapped[Ticket] = relationship(lazy="raise")
