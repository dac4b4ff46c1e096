"""alice runs the mail side from the pages: mailboxes (added, switched off, their connection
tested against a real Dovecot and an aiosmtpd sink, passwords never shown) and the quarantine
(looked at, downloaded, re-processed, discarded)."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from keepdesk.mail import ingest as ingesting
from keepdesk.mail.limits import MailLimits
from keepdesk.runtime import Runtime
from tests.conftest import World
from tests.mail_delivery.conftest import Sink, free_port
from tests.mail_fetch.conftest import ImapAccount
from tests.web.conftest import PageAgent, Pages


async def _add(alice: PageAgent, **fields: Any) -> Any:
    form = {
        "address": "help@keepdesk.test",
        "imap_url": "imap://desk:hunter2-imap@127.0.0.1:1/INBOX",
        "smtp_url": "smtp://desk:hunter2-smtp@127.0.0.1:1",
        **fields,
    }
    return await alice.post("/admin/mailboxes", form)


async def test_alice_adds_a_mailbox_and_never_sees_its_password(world: World, pages: Pages) -> None:
    alice, api = await pages.sign_in("alice"), world.client("alice")
    response = await _add(alice, team_id=str(world.ids["support"]), auto_ack="true")
    assert response.status_code == 200, response.text
    assert "help@keepdesk.test is added" in response.text
    assert "imap://desk:***@127.0.0.1:1/INBOX" in response.text
    assert "hunter2" not in response.text
    [box] = (await api.get("/api/v1/mailboxes")).json()["items"]
    assert (box["address"], box["team_id"], box["auto_ack"], box["is_active"]) == (
        "help@keepdesk.test",
        world.ids["support"],
        True,
        True,
    )
    page = (await alice.get("/admin/mailboxes")).text
    assert "hunter2" not in page and "Support" in page and "never" in page

    off = await alice.post(f"/admin/mailboxes/{box['id']}/active", {"is_active": "false"})
    assert off.status_code == 200 and "switched off" in off.text
    assert (await api.get(f"/api/v1/mailboxes/{box['id']}")).json()["is_active"] is False

    twice = await _add(alice)
    assert twice.status_code == 409 and "exists already" in twice.text
    plain = await _add(alice, address="x@keepdesk.test", imap_url="imap://u:p@mail.example/")
    assert plain.status_code == 422 and "sends the password unencrypted" in plain.text


async def test_test_connection_against_closed_ports_says_what_failed(
    world: World, pages: Pages
) -> None:
    alice = await pages.sign_in("alice")
    port = free_port()
    await _add(
        alice,
        imap_url=f"imap://desk:hunter2-imap@127.0.0.1:{port}/INBOX",
        smtp_url=f"smtp://desk:hunter2-smtp@127.0.0.1:{port}",
    )
    [box] = (await world.client("alice").get("/api/v1/mailboxes")).json()["items"]
    response = await alice.post(f"/admin/mailboxes/{box['id']}/test", {}, htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith(f'<div id="test-{box["id"]}"')
    assert "IMAP failed" in response.text and "SMTP failed" in response.text
    assert f"127.0.0.1:{port}" in response.text
    assert "hunter2" not in response.text


async def test_test_connection_against_dovecot_and_the_sink(
    world: World, pages: Pages, imap_account: ImapAccount, sink: Sink
) -> None:
    alice = await pages.sign_in("alice")
    await _add(alice, imap_url=imap_account.url, smtp_url=f"smtp://127.0.0.1:{sink.port}")
    [box] = (await world.client("alice").get("/api/v1/mailboxes")).json()["items"]
    response = await alice.post(f"/admin/mailboxes/{box['id']}/test", {}, htmx=True)
    assert response.status_code == 200, response.text
    assert "IMAP works" in response.text and "UIDVALIDITY" in response.text
    assert "IMAP4REV1" in response.text.upper()
    assert "SMTP works" in response.text and "accepted EHLO" in response.text
    assert "secret" not in response.text  # Dovecot's test password
    assert sink.received == []  # a check sends no mail
    # Without HTMX the whole page comes back with the result in place.
    page = await alice.post(f"/admin/mailboxes/{box['id']}/test", {})
    assert page.text.startswith("<!doctype html>") and "SMTP works" in page.text


def _mail(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Carol Customer <carol@customer.test>"
    message["To"] = "help@keepdesk.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@customer.test>"
    message["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
    message.set_content("The printer is on fire again.")
    return message.as_bytes()


async def _quarantine(runtime: Runtime, subject: str) -> int:
    """Held for too many headers: a limit lower than the mail's, as after a tightened setting."""
    raw = _mail(subject)
    async with runtime.db.session(write=True) as session:
        result = await ingesting.ingest(
            session,
            runtime=runtime,
            mailbox=None,
            raw=raw,
            blob_key=runtime.blobs.put(raw),
            now=runtime.clock.now(),
            limits=MailLimits(max_headers=2),
        )
        await session.commit()
    assert result.quarantine_id is not None, result
    return result.quarantine_id


async def test_alice_reprocesses_held_mail_into_a_ticket(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    item_id = await _quarantine(runtime, "Printer again")
    alice, api = await pages.sign_in("alice"), world.client("alice")
    listing = (await alice.get("/admin/quarantine")).text
    # Held before parsing, so without subject or sender: the reason and the raw mail tell.
    assert f'href="/admin/quarantine/{item_id}"' in listing and "(no subject)" in listing
    assert "too_many_headers" in listing
    details = await alice.get(f"/admin/quarantine/{item_id}")
    assert details.status_code == 200 and "Re-process" in details.text

    raw = await alice.get(f"/admin/quarantine/{item_id}/raw")
    assert raw.status_code == 200 and b"Subject: Printer again" in raw.content
    assert raw.headers["content-disposition"] == (
        f'attachment; filename="quarantine-{item_id}.eml"'
    )
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["content-security-policy"].startswith("sandbox")

    response = await alice.post(f"/admin/quarantine/{item_id}/reprocess", {}, htmx=True)
    assert response.status_code == 200, response.text
    assert "Re-processed" in response.text and "ticket #" in response.text
    held = (await api.get("/api/v1/quarantine")).json()["items"]
    assert held == []
    assert (await api.get(f"/api/v1/quarantine/{item_id}")).json()["status"] == "reprocessed"
    tickets = (await api.get("/api/v1/tickets")).json()["items"]
    assert [t["subject"] for t in tickets] == ["Printer again"]
    again = await alice.post(f"/admin/quarantine/{item_id}/reprocess", {})
    assert again.status_code == 409 and "reprocessed already" in again.text


async def test_alice_discards_held_mail(world: World, pages: Pages, runtime: Runtime) -> None:
    item_id = await _quarantine(runtime, "Spam spam")
    alice, api = await pages.sign_in("alice"), world.client("alice")
    response = await alice.post(f"/admin/quarantine/{item_id}/discard", {})
    assert response.status_code == 303 and response.headers["location"] == "/admin/quarantine"
    assert (await api.get(f"/api/v1/quarantine/{item_id}")).json()["status"] == "discarded"
    assert f"/admin/quarantine/{item_id}" not in (await alice.get("/admin/quarantine")).text
    htmx = await alice.post(f"/admin/quarantine/{item_id}/discard", {}, htmx=True)
    assert htmx.status_code == 409 and "discarded already" in htmx.text
    assert (await api.get("/api/v1/tickets")).json()["items"] == []
