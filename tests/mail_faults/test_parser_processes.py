"""Mail is parsed in worker processes (`mail_parse_processes`): the same result as a parse in
this process, and a worker that dies on a mail costs that mail a quarantine record, never the
mail, the pass, or the mails beside it (RELIABILITY.md F16, AC-6). The killed workers are the
real console script's, armed at crash point PARSER."""

from __future__ import annotations

from pathlib import Path

from keepdesk.mail import parsers
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.parsing import parse_mail
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    customer_mail,
    keepdesk,
    message_id,
)
from tests.mail_fetch.conftest import ImapAccount

OURS = frozenset({"support@example.com"})
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"


async def test_a_worker_process_parses_a_mail_as_this_process_would() -> None:
    mails = [customer_mail("same", n) for n in range(1, 4)]
    if CORPUS.is_dir():
        mails += [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml"))]
    for raw in mails:
        here = parse_mail(raw, limits=MailLimits(), own_addresses=OURS)
        there = await parsers.parse_in_worker(raw, limits=MailLimits(), own=OURS, processes=2)
        assert there == here


async def test_a_mail_that_kills_its_parser_twice_is_quarantined_and_the_pass_goes_on(
    runtime: Runtime, imap_account: ImapAccount
) -> None:
    # Its parser processes armed to die on every parse (SIGKILL, as the kernel's OOM killer
    # would): each mail kills a worker of the pool, then the process it is parsed in alone.
    tag = "parser"
    for n in (1, 2):
        await imap_account.append(customer_mail(tag, n))
    expected = [message_id(tag, n) for n in (1, 2)]
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)

    finished = await keepdesk(
        runtime.settings, "mail", "fetch-once", "--mailbox", box.address, fault="PARSER"
    )

    assert finished.returncode == 0, finished.output
    assert "a mail parser process died" in finished.output
    db = await assert_each_mail_once(runtime, imap_account, box, expected, quarantined=expected)
    for mid in expected:
        (held,) = db.quarantined[mid]
        assert held.reason == "parser_crashed"
        assert "died twice" in held.detail and "no other message" in held.detail


async def test_the_mails_beside_one_that_kills_the_parser_come_in(
    runtime: Runtime, imap_account: ImapAccount
) -> None:
    # One parser process, armed to die on its second parse: it parses mail 1, dies on mail 2,
    # and mail 3, waiting behind it, fails with it. Each is parsed again alone, in a process
    # whose first parse it is, and comes in; nothing is quarantined.
    tag = "beside"
    for n in (1, 2, 3):
        await imap_account.append(customer_mail(tag, n))
    expected = [message_id(tag, n) for n in (1, 2, 3)]
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)

    finished = await keepdesk(
        runtime.settings,
        "mail",
        "fetch-once",
        "--mailbox",
        box.address,
        fault="PARSER",
        after=2,
        env={"KEEPDESK_MAIL_PARSE_PROCESSES": "1"},
    )

    assert finished.returncode == 0, finished.output
    assert "a mail parser process died" in finished.output
    db = await assert_each_mail_once(runtime, imap_account, box, expected)
    assert db.quarantined == {}
