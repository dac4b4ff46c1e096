"""Hostile mail in the middle of a batch is quarantined with its reason, and the fetcher carries
on with the rest: one bad mail never stops the mail behind it (RELIABILITY.md F16, AC-6, AC-7).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from keepdesk.mail.fetcher import PROCESS_ATTEMPTS, fetch_once
from keepdesk.mail.models import Mailbox
from keepdesk.runtime import Runtime
from keepdesk.tickets import service
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    customer_mail,
    message_id,
)
from tests.mail_fetch.conftest import ImapAccount


def _head(tag: str, n: int, content_type: str) -> str:
    return (
        f"From: Customer {n} <c{n}-{tag}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Request {n} of {tag}\r\nMessage-ID: {message_id(tag, n)}\r\n"
        f"Date: Mon, 02 Mar 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n"
    )


def nested_multiparts(tag: str, n: int, depth: int = 60) -> bytes:
    """Multiparts inside multiparts, deeper than the 50 levels allowed (corpus L04)."""
    body = "innermost\r\n"
    for level in reversed(range(1, depth)):
        body = (
            f"--d{level}\r\nContent-Type: multipart/mixed; boundary=d{level + 1}\r\n\r\n"
            if level < depth - 1
            else f"--d{level}\r\nContent-Type: text/plain\r\n\r\n"
        ) + f"{body}--d{level}--\r\n"
    return (_head(tag, n, "multipart/mixed; boundary=d1") + "\r\n" + body).encode()


def many_parts(tag: str, n: int, parts: int = 1100) -> bytes:
    """More MIME parts than the 1 000 allowed."""
    body = "".join(f"--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(parts))
    return (_head(tag, n, "multipart/mixed; boundary=p") + "\r\n" + body + "--p--\r\n").encode()


def many_headers(tag: str, n: int, fields: int = 1100) -> bytes:
    """More header fields than the 1 000 allowed."""
    flood = "".join(f"X-Flood-{i}: {i}\r\n" for i in range(fields))
    return (_head(tag, n, "text/plain") + flood + "\r\nflooded\r\n").encode()


def unknown_charset(tag: str, n: int) -> bytes:
    """A charset no codec knows (corpus 209): odd, but a customer's mail all the same."""
    text = "\r\nHall\xe5, d\xe4r \xe4r min faktura?\r\n"
    return (_head(tag, n, "text/plain; charset=x-no-such-charset") + text).encode("latin-1")


async def test_three_hostile_mails_in_a_batch_of_ten_are_quarantined_and_the_rest_come_in(
    runtime: Runtime, imap_account: ImapAccount
) -> None:
    tag = "f16"
    hostile = {1: nested_multiparts, 5: many_parts, 10: many_headers}
    for n in range(1, 11):
        if n in hostile:
            raw = hostile[n](tag, n)
        elif n == 3:
            raw = unknown_charset(tag, n)
        else:
            raw = customer_mail(tag, n)
        await imap_account.append(raw)
    expected = [message_id(tag, n) for n in range(1, 11)]
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)

    report = await fetch_once(runtime, box.id)

    assert report.errors == []
    assert (report.fetched, report.ingested, report.quarantined) == (10, 7, 3)
    poisoned = [message_id(tag, n) for n in hostile]
    db = await assert_each_mail_once(runtime, imap_account, box, expected, quarantined=poisoned)
    reasons = {mid: db.quarantined[mid][0].reason for mid in poisoned}
    assert reasons == dict(
        zip(poisoned, ["too_deep", "too_many_parts", "too_many_headers"], strict=True)
    )
    async with runtime.db.session() as session:
        stored = await session.get(Mailbox, box.id)
    assert stored is not None
    assert (stored.fetched_count, stored.quarantined_count, stored.last_uid) == (10, 3, 10)
    assert stored.last_error is None


def html_mail(tag: str, n: int, html: str) -> bytes:
    boundary = f"alt-{tag}-{n}"
    return (
        _head(tag, n, f'multipart/alternative; boundary="{boundary}"')
        + f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nrequest {n}\r\n"
        + f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        + f"--{boundary}--\r\n"
    ).encode()


async def test_mail_that_makes_the_sanitiser_raise_is_retried_then_quarantined_alone(
    runtime: Runtime, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # F16's fourth kind: processing fails after the parse, inside the transaction that records
    # the mail. The fault is injected into the real sanitiser for mail carrying a marker.
    real = service.sanitize_html
    calls: Counter[str] = Counter()

    def choking(html: str) -> str:
        if "poison-pill" in html:
            calls[html] += 1
            raise ValueError("the sanitiser choked")
        return real(html)

    monkeypatch.setattr(service, "sanitize_html", choking)
    tag = "f16s"
    poisoned_at = (1, 2, 11)  # the first two of the first batch of ten, and one in the second
    for n in range(1, 13):
        marker = "poison-pill" if n in poisoned_at else "fine"
        await imap_account.append(html_mail(tag, n, f"<p>{marker} {n}</p>"))
    expected = [message_id(tag, n) for n in range(1, 13)]
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)
    in_tens = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"mail_fetch_batch": 10})
    )

    report = await fetch_once(in_tens, box.id)

    assert report.errors == []
    assert (report.fetched, report.ingested, report.quarantined) == (12, 9, 3)
    poisoned = [message_id(tag, n) for n in poisoned_at]
    db = await assert_each_mail_once(runtime, imap_account, box, expected, quarantined=poisoned)
    for mid in poisoned:
        (held,) = db.quarantined[mid]
        assert held.reason == "processing_error"
        assert "ValueError: the sanitiser choked" in held.detail
    # Each poisoned mail was tried on its own PROCESS_ATTEMPTS times, after its batch's one try
    # stopped at the first poisoned mail in it (mail 2 was never reached in that try).
    tries = {html.removesuffix("</p>").split()[-1]: n for html, n in calls.items()}
    assert tries == {"1": PROCESS_ATTEMPTS + 1, "2": PROCESS_ATTEMPTS, "11": PROCESS_ATTEMPTS + 1}
    async with runtime.db.session() as session:
        stored = await session.get(Mailbox, box.id)
    assert stored is not None
    # Quarantined by the fetcher after its attempts, a mail still counts as fetched.
    assert (stored.fetched_count, stored.quarantined_count, stored.last_uid) == (12, 3, 12)
