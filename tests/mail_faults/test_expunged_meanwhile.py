"""Another client expunges mail while keepdesk fetches: the message numbers shift under the
fetcher, which works by UID only, so every other mail still comes in exactly once and nothing
is moved twice or by mistake (RELIABILITY.md F5)."""

from __future__ import annotations

import imaplib

from keepdesk.mail.fetcher import fetch_once
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    deliver,
    proxied_url,
    server_mail,
)
from tests.mail_faults.proxy import ImapProxy
from tests.mail_fetch.conftest import ImapAccount
from tests.support.dovecot import PASSWORD


def expunge_behind_keepdesks_back(account: ImapAccount, uid: int) -> None:
    """Another mail client (straight to Dovecot, not through the proxy) deletes one mail."""
    other = imaplib.IMAP4(account.server.host, account.server.port, timeout=10)
    try:
        other.login(account.user, PASSWORD)
        other.select("INBOX")
        other.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
        other.expunge()
    finally:
        other.logout()


async def test_mail_expunged_by_another_client_after_the_search_is_skipped_the_rest_come_in(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy
) -> None:
    expected = await deliver(imap_account, "f5", 5)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )
    gone: list[str] = []

    def between_search_and_sizes(line: bytes) -> None:
        # keepdesk has the UIDs (its UID SEARCH came back) and now asks for their sizes.
        if b"RFC822.SIZE)" in line.upper() and not gone:
            expunge_behind_keepdesks_back(imap_account, 2)
            gone.append(expected[1])

    proxy.on_command = between_search_and_sizes
    report = await fetch_once(runtime, box.id)

    assert gone == [expected[1]], "the sizes were never asked for"
    assert report.errors == []
    assert (report.fetched, report.ingested) == (4, 4)
    assert expected[1] not in {h.message_id for h in await server_mail(imap_account)}
    kept = [mid for mid in expected if mid not in gone]
    await assert_each_mail_once(runtime, imap_account, box, kept)
