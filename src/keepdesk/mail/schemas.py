"""REST shapes of mailboxes (never with passwords) and quarantined mail."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keepdesk.mail.mailboxes import imap_server, smtp_server
from keepdesk.mail.models import Mailbox, ProcessedAction, QuarantinedMail, QuarantineStatus
from keepdesk.secretbox import SecretUnreadable
from keepdesk.web.schema import ApiModel, Text


class FetchLog(BaseModel):
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    fetched_count: int
    quarantined_count: int


class MailboxRead(BaseModel):
    id: int
    address: str
    display_name: str
    team_id: int | None
    imap: str = Field(description="The IMAP URL with the password masked.")
    smtp: str = Field(description="The SMTP URL with the password masked.")
    processed_action: ProcessedAction
    processed_folder: str
    quarantine_folder: str
    auto_ack: bool
    allow_plaintext: bool
    is_active: bool
    uidvalidity: int | None
    last_uid: int = Field(description="The fetch cursor: the last UID committed.")
    rescan_required: bool = Field(description="True after a UIDVALIDITY change, until rescanned.")
    alert: str | None = Field(description="Something an admin must know about this mailbox.")
    fetch_log: FetchLog

    @classmethod
    def of(cls, mailbox: Mailbox, secret: bytes) -> MailboxRead:
        try:
            imap, smtp = (
                imap_server(mailbox, secret).masked(),
                smtp_server(mailbox, secret).masked(),
            )
        except (SecretUnreadable, ValueError) as exc:
            imap = smtp = f"(unreadable: {exc})"
        return cls(
            id=mailbox.id,
            address=mailbox.address,
            display_name=mailbox.display_name,
            team_id=mailbox.team_id,
            imap=imap,
            smtp=smtp,
            processed_action=mailbox.processed_action,
            processed_folder=mailbox.processed_folder,
            quarantine_folder=mailbox.quarantine_folder,
            auto_ack=mailbox.auto_ack,
            allow_plaintext=mailbox.allow_plaintext,
            is_active=mailbox.is_active,
            uidvalidity=mailbox.uidvalidity,
            last_uid=mailbox.last_uid,
            rescan_required=mailbox.rescan_required,
            alert=mailbox.alert,
            fetch_log=FetchLog(
                last_fetch_at=mailbox.last_fetch_at,
                last_success_at=mailbox.last_success_at,
                last_error=mailbox.last_error,
                last_error_at=mailbox.last_error_at,
                fetched_count=mailbox.fetched_count,
                quarantined_count=mailbox.quarantined_count,
            ),
        )


class MailboxCreate(ApiModel):
    address: Text = Field(max_length=320, description="The support address customers write to.")
    imap_url: Text = Field(max_length=2000, description="imaps://user:password@host:993/INBOX")
    smtp_url: Text = Field(max_length=2000, description="smtps://user:password@host:465")
    display_name: Text = Field("", max_length=200)
    team_id: int | None = Field(None, ge=1, description="Team new tickets from it belong to.")
    processed_action: ProcessedAction = ProcessedAction.move
    processed_folder: Text = Field("keepdesk/processed", max_length=200)
    quarantine_folder: Text = Field("keepdesk/quarantine", max_length=200)
    auto_ack: bool = Field(False, description="Acknowledge new requests by mail.")
    allow_plaintext: bool = Field(
        False, description="Allow imap:// and smtp:// without TLS to hosts off loopback."
    )


class MailboxUpdate(ApiModel):
    display_name: Text | None = Field(None, max_length=200)
    team_id: int | None = Field(None, ge=1)
    auto_ack: bool | None = None
    is_active: bool | None = None


class QuarantineRead(BaseModel):
    id: int
    mailbox_id: int | None
    uidvalidity: int | None
    uid: int | None
    size: int
    reason: str = Field(description="Machine-readable reason, e.g. `too_many_parts`.")
    detail: str
    subject: str
    sender: str
    status: QuarantineStatus
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, item: QuarantinedMail) -> QuarantineRead:
        return cls.model_validate(item, from_attributes=True)


class ReprocessResult(BaseModel):
    outcome: str
    reason: str
    ticket_number: int | None
    quarantine_id: int | None
