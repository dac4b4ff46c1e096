"""Every command keepdesk sends, recorded on the wire: it works by UID only and never sends a
plain EXPUNGE (or CLOSE, which expunges too), whatever it does with processed mail and whatever
the server can do. Without MOVE and UIDPLUS it only flags, and tells the admin
(RELIABILITY.md AC-3, F6)."""

from __future__ import annotations

import dataclasses

import pytest

from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, ProcessedAction
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    assert_nothing_lost_or_doubled,
    deliver,
    proxied_url,
)
from tests.mail_faults.proxy import ImapProxy
from tests.mail_fetch.conftest import ImapAccount

# Commands that name messages: each must come as `UID <command>`.
BY_MESSAGE = {b"FETCH", b"STORE", b"COPY", b"MOVE", b"SEARCH", b"EXPUNGE"}


def verbs(commands: list[bytes]) -> list[list[bytes]]:
    """Each command without its tag, upper-cased, split into words."""
    return [line.upper().split(b" ")[1:] for line in commands if b" " in line]


@pytest.mark.parametrize(
    ("action", "hidden", "moves", "expunges"),
    [
        # The three mails are one batch: one command moves or expunges all of them.
        (ProcessedAction.delete, (), 0, 1),
        (ProcessedAction.move, (), 1, 0),
        (ProcessedAction.move, (b"MOVE",), 0, 1),  # UID COPY, then UID EXPUNGE of those UIDs
        (ProcessedAction.delete, (b"MOVE", b"UIDPLUS"), 0, 0),
        (ProcessedAction.move, (b"MOVE", b"UIDPLUS"), 0, 0),
    ],
    ids=["delete", "move", "move-without-MOVE", "delete-flag-only", "move-flag-only"],
)
async def test_keepdesk_never_sends_a_plain_expunge(
    runtime: Runtime,
    imap_account: ImapAccount,
    proxy: ImapProxy,
    action: ProcessedAction,
    hidden: tuple[bytes, ...],
    moves: int,
    expunges: int,
) -> None:
    expected = await deliver(imap_account, f"ac3{action.value}{len(hidden)}", 3)
    box = await add_box(
        runtime,
        address="support@example.com",
        imap_url=proxied_url(proxy, imap_account),
        action=action,
    )
    proxy.hide_capabilities = frozenset(hidden)
    report = await fetch_once(runtime, box.id)
    assert report.errors == [] and report.ingested == 3

    sent = verbs(proxy.commands)
    assert [c for c in sent if c[0] in (b"EXPUNGE", b"CLOSE")] == [], "a plain EXPUNGE"
    assert [c for c in sent if c[0] in BY_MESSAGE] == [], "a command by sequence number"
    expunged = [c[2] for c in sent if c[:2] == [b"UID", b"EXPUNGE"]]
    # Only the UIDs keepdesk recorded, each named: no range, no "*" that could take in mail
    # that arrived meanwhile.
    named = [uid for uids in expunged for uid in uids.split(b",")]
    assert all(uid.isdigit() for uid in named), "UID EXPUNGE of a range"
    assert sorted(named) == ([b"1", b"2", b"3"] if expunges else [])
    moved = [c for c in sent if c[:2] == [b"UID", b"MOVE"]]
    assert (len(moved), len(expunged)) == (moves, expunges)

    flag_only = set(hidden) == {b"MOVE", b"UIDPLUS"}
    if flag_only:
        _, server = await assert_nothing_lost_or_doubled(runtime, imap_account, box.id, expected)
        assert sorted(h.message_id for h in server if h.folder == "INBOX") == sorted(expected)
        assert all("\\Seen" in h.flags and "\\Deleted" not in h.flags for h in server)
        async with runtime.db.session() as session:
            stored = await session.get(Mailbox, box.id)
        assert stored is not None and stored.alert and "neither MOVE nor UIDPLUS" in stored.alert
    else:
        await assert_each_mail_once(runtime, imap_account, box, expected)


async def test_a_batchs_bodies_come_in_one_uid_fetch_that_names_each_uid(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy
) -> None:
    expected = await deliver(imap_account, "ahead", 5)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )
    in_twos = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"mail_fetch_batch": 2})
    )
    report = await fetch_once(in_twos, box.id)
    assert report.errors == [] and report.ingested == 5

    fetches = [c for c in verbs(proxy.commands) if c[:2] == [b"UID", b"FETCH"]]
    bodies = [c[2] for c in fetches if any(b"BODY.PEEK[]" in word for word in c)]
    assert bodies == [b"1,2", b"3,4", b"5"]
    await assert_each_mail_once(runtime, imap_account, box, expected)
