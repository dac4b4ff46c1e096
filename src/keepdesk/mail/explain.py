"""`keepdesk mail explain`: what keepdesk would do with a mail, read-only, for people."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.mail import threading
from keepdesk.mail.ingest import auto_ack_verdict
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.mailboxes import find_mailbox, own_addresses
from keepdesk.mail.parsing import Rejected, parse_mail
from keepdesk.runtime import Runtime


async def explain(
    session: AsyncSession, *, runtime: Runtime, raw: bytes, mailbox_address: str | None
) -> list[str]:
    ours = await own_addresses(session)
    mailbox = await find_mailbox(session, mailbox_address) if mailbox_address else None
    lines = [f"size: {len(raw)} bytes"]
    parsed = await asyncio.to_thread(parse_mail, raw, limits=MailLimits(), own_addresses=ours)
    if isinstance(parsed, Rejected):
        lines.append(f"verdict: QUARANTINE ({parsed.reason}): {parsed.detail}")
        return lines
    sender = parsed.sender
    lines += [
        f"message-id: {parsed.message_id or '(none: a deterministic one would be made up)'}",
        f"subject: {parsed.subject!r}",
        f"from: {sender.display_name!r} <{sender.address}> "
        f"({'verified' if sender.is_verified else 'NOT verified: ' + '; '.join(sender.problems)})",
        f"date: {parsed.date.isoformat() if parsed.date else '(none)'}",
        f"text body: {len(parsed.text_body)} characters; html body: "
        f"{len(parsed.html_body) if parsed.html_body else 0} characters",
    ]
    for a in parsed.attachments:
        inline = " inline" if a.is_inline else ""
        lines.append(f"attachment: {a.filename!r} {a.content_type} {a.size} bytes{inline}")
    automation = parsed.automation
    if automation.reasons:
        lines.append("automated: " + ", ".join(r.value for r in automation.reasons))
    if parsed.defects:
        lines.append("defects: " + ", ".join(parsed.defects[:10]))
    if automation.bounce is not None:
        bounce = automation.bounce
        lines.append(
            f"verdict: DELIVERY REPORT ({bounce.action or 'unknown action'}) about "
            f"{', '.join(bounce.original_message_ids) or 'an unknown mail'}"
        )
        return lines
    if not sender.is_verified or sender.address is None:
        lines.append("verdict: QUARANTINE (unverified_sender)")
        return lines
    if sender.address in ours:
        lines.append("verdict: LOOP: keepdesk's own address; nothing would be created")
        return lines
    decision = await threading.decide(
        session,
        sender=sender.address,
        subject=parsed.subject,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        secret=runtime.secret,
    )
    if decision.ticket is not None:
        lines.append(f"verdict: ADD TO TICKET #{decision.ticket.number}")
    else:
        lines.append("verdict: NEW TICKET")
    lines.append(f"why: {decision.reason}")
    if decision.ticket is None and decision.unverified_follow_up_of is None:
        _, why = auto_ack_verdict(parsed, mailbox, ours)
        lines.append(f"auto-ack: {why}")
    else:
        lines.append("auto-ack: none (only new requests are acknowledged)")
    return lines
