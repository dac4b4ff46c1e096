"""The outbox table: one row per outbound mail, with its delivery state and attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keepdesk.db import Base, UTCDateTime, json_type


class OutboxKind(StrEnum):
    reply = "reply"
    auto_ack = "auto_ack"
    notification = "notification"


class DeliveryStatus(StrEnum):
    queued = "queued"  # waiting for its first attempt
    sending = "sending"  # claimed by a sender right now
    retrying = "retrying"  # a temporary failure; next_attempt_at says when
    uncertain = "uncertain"  # the connection dropped after DATA: maybe delivered; retried
    sent = "sent"
    failed = "failed"  # permanent: the server's words are in last_error


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_rate_key_created", "rate_key", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(Enum(OutboxKind, native_enum=False, length=16))
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), index=True
    )
    ticket_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), unique=True
    )
    # Fixed when the row is created, so every attempt carries the same Message-ID.
    message_id_header: Mapped[str] = mapped_column(String(250), unique=True)
    recipients: Mapped[list[str]] = mapped_column(json_type())
    # The rendered RFC 5322 bytes, written at the first attempt and reused by every retry.
    blob_key: Mapped[str | None] = mapped_column(String(64))
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, native_enum=False, length=16)
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_smtp_code: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Groups rows that share a rate limit, e.g. one auto-ack per sender and mailbox a day.
    rate_key: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
