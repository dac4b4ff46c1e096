"""Telling machine-sent mail from people, so keepdesk never answers a robot (RFC 3834)."""

import email
import email.policy
from email.message import Message
from pathlib import Path

import pytest

from keepdesk.mail.loops import AutomationReason, BounceAction, classify_automation

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OURS = {"support@example.com", "Billing@Example.com"}


def message(headers: str, body: str = "Hello.") -> Message:
    raw = headers.strip("\n").replace("\n", "\r\n") + "\r\n\r\n" + body + "\r\n"
    return email.message_from_bytes(raw.encode("utf-8"), policy=email.policy.default)


def fixture(name: str) -> Message:
    return email.message_from_bytes((FIXTURES / name).read_bytes(), policy=email.policy.default)


HUMAN = "From: Alice <alice@example.org>\nTo: support@example.com\nSubject: Printer"


def test_a_person_writing_in_may_get_an_auto_reply() -> None:
    automation = classify_automation(message(HUMAN), own_addresses=OURS)
    assert automation.reasons == []
    assert not automation.is_automated
    assert automation.may_auto_reply
    assert automation.bounce is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Auto-Submitted: auto-replied", AutomationReason.AUTO_SUBMITTED),
        (
            "Auto-Submitted: auto-generated; owner-email=x@example.org",
            AutomationReason.AUTO_SUBMITTED,
        ),
        ("Auto-Submitted: something-new", AutomationReason.AUTO_SUBMITTED),
        ("X-Autoreply: yes", AutomationReason.AUTOREPLY_HEADER),
        ("X-Autorespond: Abwesenheitsnotiz", AutomationReason.AUTOREPLY_HEADER),
        ("Precedence: bulk", AutomationReason.PRECEDENCE),
        ("Precedence: junk", AutomationReason.PRECEDENCE),
        ("Precedence: list", AutomationReason.PRECEDENCE),
        ("List-Id: Users <users.lists.example.org>", AutomationReason.LIST),
        ("List-Unsubscribe: <mailto:unsub@example.org>", AutomationReason.LIST),
        ("Return-Path: <>", AutomationReason.NULL_RETURN_PATH),
        ("X-Loop: support@tickets.example.net", AutomationReason.FOREIGN_HELPDESK),
        ("X-OTRS-Loop: yes", AutomationReason.FOREIGN_HELPDESK),
        ("X-Failed-Recipients: gone@example.net", AutomationReason.BOUNCE),
    ],
)
def test_machine_markers_forbid_an_auto_reply(extra: str, reason: AutomationReason) -> None:
    automation = classify_automation(message(f"{HUMAN}\n{extra}"), own_addresses=OURS)
    assert reason in automation.reasons
    assert not automation.may_auto_reply


@pytest.mark.parametrize(
    "extra", ["Auto-Submitted: no", "Auto-Submitted: No (a person wrote this)", "X-Autoreply: no"]
)
def test_markers_that_say_no_are_respected(extra: str) -> None:
    automation = classify_automation(message(f"{HUMAN}\n{extra}"), own_addresses=OURS)
    assert automation.may_auto_reply


def test_auto_response_suppress_alone_stops_the_ack_but_is_not_automation() -> None:
    msg = message(f"{HUMAN}\nX-Auto-Response-Suppress: DR, OOF, AutoReply")
    automation = classify_automation(msg, own_addresses=OURS)
    assert not automation.is_automated
    assert automation.suppresses_auto_reply
    assert not automation.may_auto_reply


def test_suppressing_only_delivery_receipts_still_allows_the_ack() -> None:
    msg = message(f"{HUMAN}\nX-Auto-Response-Suppress: DR, RN")
    assert classify_automation(msg, own_addresses=OURS).may_auto_reply


@pytest.mark.parametrize(
    "headers",
    [
        "From: Support <SUPPORT@example.com>\nTo: support@example.com",
        "From: Billing <billing@example.com>\nTo: support@example.com",
        "From: someone@example.org\nX-Loop: support@example.com",
    ],
)
def test_our_own_mail_coming_back_is_a_loop(headers: str) -> None:
    automation = classify_automation(message(headers), own_addresses=OURS)
    assert AutomationReason.OWN_ADDRESS in automation.reasons
    assert AutomationReason.FOREIGN_HELPDESK not in automation.reasons


def test_a_permanent_dsn_names_the_failed_recipient_and_our_message() -> None:
    automation = classify_automation(fixture("dsn-failed.eml"), own_addresses=OURS)
    assert AutomationReason.BOUNCE in automation.reasons
    assert AutomationReason.NULL_RETURN_PATH in automation.reasons
    bounce = automation.bounce
    assert bounce is not None
    assert bounce.action is BounceAction.FAILED
    assert bounce.is_permanent and not bounce.is_transient
    assert bounce.recipients == ["gone@example.net"]
    assert bounce.status == "5.1.1"
    assert bounce.original_message_ids == ["<out-77@example.com>"]


def test_a_delayed_dsn_is_transient() -> None:
    automation = classify_automation(fixture("dsn-delayed.eml"), own_addresses=OURS)
    bounce = automation.bounce
    assert bounce is not None
    assert bounce.action is BounceAction.DELAYED
    assert bounce.is_transient and not bounce.is_permanent
    assert bounce.recipients == ["slow@example.net"]
    assert bounce.original_message_ids == ["<out-78@example.com>"]
    assert not automation.may_auto_reply


def test_a_non_standard_mailer_daemon_bounce_is_recognised() -> None:
    msg = message(
        "From: MAILER-DAEMON@mta.example.net\nTo: support@example.com\nSubject: failure notice",
        "Sorry, no mailbox here.\r\n\r\n--- Below this line is a copy of the message.\r\n\r\n"
        "Message-ID: <out-90@example.com>\r\nSubject: Re: hello",
    )
    automation = classify_automation(msg, own_addresses=OURS)
    assert AutomationReason.BOUNCE in automation.reasons
    assert automation.bounce is not None
    assert automation.bounce.action is None
    assert automation.bounce.original_message_ids == ["<out-90@example.com>"]


def test_exim_failed_recipients_are_reported() -> None:
    msg = message(f"{HUMAN}\nReturn-Path: <>\nX-Failed-Recipients: Gone@Example.net, bad")
    bounce = classify_automation(msg, own_addresses=OURS).bounce
    assert bounce is not None
    assert bounce.recipients == ["gone@example.net"]
    assert bounce.is_permanent


def test_a_null_return_path_with_a_bounce_subject_is_a_bounce() -> None:
    msg = message("From: robot@mta.example.net\nReturn-Path: <>\nSubject: Undeliverable: hi")
    assert AutomationReason.BOUNCE in classify_automation(msg, own_addresses=OURS).reasons


def test_a_read_receipt_is_a_report_not_a_bounce() -> None:
    msg = message(
        f"{HUMAN}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="R"',
        "--R\r\nContent-Type: text/plain\r\n\r\nRead.\r\n--R--",
    )
    automation = classify_automation(msg, own_addresses=OURS)
    assert automation.reasons == [AutomationReason.REPORT]
    assert automation.bounce is None
