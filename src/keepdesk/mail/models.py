"""Mail tables: mailboxes, receipts of every fetched UID, quarantined mail, and the mail facts
of ticket messages (Message-IDs, why a mail was threaded where it was)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keepdesk.db import Base, UTCDateTime, json_type


class ProcessedAction(StrEnum):
    move = "move"  # UID MOVE to processed_folder (default)
    flag = "flag"  # leave it in the INBOX, flagged \Seen
    delete = "delete"  # UID STORE \Deleted + UID EXPUNGE of that UID only


class ReceiptOutcome(StrEnum):
    ingested = "ingested"
    duplicate = "duplicate"  # byte-identical re-delivery of mail we already have
    quarantined = "quarantined"
    loop = "loop"  # our own mail coming back: stored raw, nothing created


class QuarantineStatus(StrEnum):
    held = "held"
    reprocessed = "reprocessed"
    discarded = "discarded"


class Direction(StrEnum):
    inbound = "in"
    outbound = "out"


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(cls, native_enum=False, length=16)


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    # imap[s]://user:password@host:port/FOLDER and smtp[s|+starttls]://…, sealed (secretbox).
    imap_url_sealed: Mapped[str] = mapped_column(Text)
    smtp_url_sealed: Mapped[str] = mapped_column(Text)
    processed_action: Mapped[ProcessedAction] = mapped_column(_enum(ProcessedAction))
    processed_folder: Mapped[str] = mapped_column(String(200))
    quarantine_folder: Mapped[str] = mapped_column(String(200))
    allow_plaintext: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_ack: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # The fetch cursor (AC-4): advances per committed message.
    uidvalidity: Mapped[int | None] = mapped_column(Integer)
    last_uid: Mapped[int] = mapped_column(Integer, default=0)
    # Set when UIDVALIDITY changed: no STORE/MOVE/EXPUNGE until a rescan deduplicated by hash.
    rescan_required: Mapped[bool] = mapped_column(Boolean, default=False)

    # The fetch log an admin reads (and /metrics exports).
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    alert: Mapped[str | None] = mapped_column(Text)
    fetched_count: Mapped[int] = mapped_column(Integer, default=0)
    quarantined_count: Mapped[int] = mapped_column(Integer, default=0)


class MailReceipt(Base):
    """One fetched IMAP message: its UID, its raw bytes' hash, and what became of it."""

    __tablename__ = "mail_receipts"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uidvalidity", "uid"),
        Index("ix_mail_receipts_mailbox_sha", "mailbox_id", "content_sha256"),
        Index("ix_mail_receipts_redelivery", "header_message_id", "body_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    # Null for mail that did not come over IMAP (an import, a re-processed quarantine item).
    uidvalidity: Mapped[int | None] = mapped_column(Integer)
    uid: Mapped[int | None] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    # A re-delivery through another MX differs only in its trace headers: same Message-ID and
    # the same bytes after the header block count as the same mail (corpus 311).
    header_message_id: Mapped[str | None] = mapped_column(String(250))
    body_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[ReceiptOutcome] = mapped_column(_enum(ReceiptOutcome))
    ticket_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    quarantine_id: Mapped[int | None] = mapped_column(
        ForeignKey("quarantined_mail.id", ondelete="SET NULL")
    )
    # True once the processed action (move/flag/delete) was done on the IMAP server.
    imap_done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class QuarantinedMail(Base):
    __tablename__ = "quarantined_mail"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    uidvalidity: Mapped[int | None] = mapped_column(Integer)
    uid: Mapped[int | None] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(300), default="")
    sender: Mapped[str] = mapped_column(String(320), default="")
    status: Mapped[QuarantineStatus] = mapped_column(_enum(QuarantineStatus))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by_agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL")
    )


class MailMessage(Base):
    """The mail side of a ticket message: headers that thread it and the verdicts about it."""

    __tablename__ = "mail_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    direction: Mapped[Direction] = mapped_column(_enum(Direction))
    header_message_id: Mapped[str] = mapped_column(String(250), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(250))
    references: Mapped[list[str]] = mapped_column(json_type())
    from_address: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    sender_verified: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why the mail landed on this ticket, for people: "reply to keepdesk's message <…>".
    thread_reason: Mapped[str] = mapped_column(Text, default="")
    automation: Mapped[str | None] = mapped_column(String(64))
    raw_blob_key: Mapped[str | None] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
