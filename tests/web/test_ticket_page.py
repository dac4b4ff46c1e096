"""The ticket page: the conversation, HTML mail in a sandbox, attachments, the side panel and the
composer with its stale-send warning."""

from __future__ import annotations

import re

from keepdesk.accounts import auth
from keepdesk.mail import ingest
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as tickets
from keepdesk.tickets.attachments import NewAttachment
from keepdesk.tickets.policy import TicketPolicy
from tests.conftest import World, open_ticket
from tests.web.conftest import Pages

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2a3c6b50000000049454e44ae426082"
)


async def test_the_conversation_reads_in_order_with_notes_set_apart(
    world: World, pages: Pages
) -> None:
    api = world.client("dave")
    ticket = await open_ticket(api, subject="Where is my parcel?", body="It is late {{7*7}}.")
    number = ticket["number"]
    await api.post(f"/api/v1/tickets/{number}/messages", json={"kind": "note", "body": "Check DHL"})
    await api.post(
        f"/api/v1/tickets/{number}/messages", json={"kind": "reply", "body": "On its way"}
    )
    await api.patch(f"/api/v1/tickets/{number}", json={"priority": "high"})
    dave = await pages.sign_in("dave")

    page = (await dave.get(f"/tickets/{number}")).text
    kinds = re.findall(r'<article class="message kind-(\w+)"', page)
    assert kinds == ["customer", "note", "reply"]
    assert "It is late {{7*7}}." in page  # customer text is never a template
    assert "Internal note" in page
    assert "Queued for sending" in page
    assert "Dave Support changed priority from normal to high" in page
    assert page.index("Check DHL") < page.index("On its way") < page.index("changed priority")


async def test_html_mail_is_framed_in_a_sandbox_under_its_own_csp(
    world: World, pages: Pages
) -> None:
    api = world.client("dave")
    html = (
        '<p onclick="alert(1)">Hi</p><script>alert(2)</script>'
        '<img src="https://tracker.example.net/p.gif">'
    )
    ticket = await open_ticket(api, body="Hi", body_html=html)
    number = ticket["number"]
    message = (await api.get(f"/api/v1/tickets/{number}/messages")).json()["items"][0]
    dave = await pages.sign_in("dave")

    page = (await dave.get(f"/tickets/{number}")).text
    frame = re.search(r"<iframe[^>]*>", page)
    assert frame
    sandbox = re.search(r'sandbox="([^"]*)"', frame.group(0))
    assert sandbox
    assert "allow-scripts" not in sandbox.group(1)
    assert "allow-same-origin" not in sandbox.group(1)
    assert f'src="/tickets/{number}/messages/{message["id"]}/body"' in frame.group(0)
    assert "tracker.example.net" not in page
    assert "Show remote images" in page

    body = await dave.get(f"/tickets/{number}/messages/{message['id']}/body")
    csp = body.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'")
    assert "script" not in csp and "sandbox" in csp
    assert "frame-ancestors 'self'" in csp
    assert body.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<script" not in body.text and "onclick" not in body.text
    remote = await dave.get(
        f"/tickets/{number}/messages/{message['id']}/body", params={"remote_images": "true"}
    )
    assert "img-src data: https: http:" in remote.headers["content-security-policy"]
    # Without JavaScript the link reloads the page with that message's images shown.
    opted = (await dave.get(f"/tickets/{number}", params={"images": message["id"]})).text
    assert f"/messages/{message['id']}/body?remote_images=true" in opted


async def test_inline_images_come_along_as_data_urls(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    async with runtime.db.session(write=True) as session:
        actor = await auth.actor_for_agent(session, world.ids["dave"])
        ticket = await tickets.open_ticket(
            session,
            actor=actor,
            subject="Screenshot",
            body="see image",
            body_html='<p>See <img src="cid:shot@example"></p>',
            requester_email="carol@customer.test",
            attachments=[
                NewAttachment(
                    "shot.png", "image/png", PNG, content_id="<shot@example>", is_inline=True
                )
            ],
            now=runtime.clock.now(),
            blobs=runtime.blobs,
            policy=TicketPolicy.from_runtime(runtime),
        )
        number = ticket.number
        await session.commit()
    dave = await pages.sign_in("dave")
    page = (await dave.get(f"/tickets/{number}")).text
    body_url = re.search(r'src="(/tickets/\d+/messages/\d+/body)"', page)
    assert body_url
    body = await dave.get(body_url.group(1))
    assert 'src="data:image/png;base64,' in body.text
    assert "cid:" not in body.text


async def test_attachments_are_listed_and_only_ever_downloaded(world: World, pages: Pages) -> None:
    api = world.client("dave")
    ticket = await open_ticket(
        api,
        attachments=[
            {
                "filename": "page.html",
                "content_type": "text/html",
                "content_base64": "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
            }
        ],
    )
    number = ticket["number"]
    attachment = (await api.get(f"/api/v1/tickets/{number}/messages")).json()["items"][0][
        "attachments"
    ][0]
    dave = await pages.sign_in("dave")
    page = (await dave.get(f"/tickets/{number}")).text
    assert "page.html" in page and "text/html" in page and "25 bytes" in page
    download = await dave.get(f"/tickets/{number}/attachments/{attachment['id']}")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-security-policy"] == "sandbox; default-src 'none'"
    bob = await pages.sign_in("bob")
    assert (await bob.get(f"/tickets/{number}/attachments/{attachment['id']}")).status_code == 404


async def test_why_a_mail_was_threaded_here_is_shown(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    raw = (
        b"From: Erin Example <erin@customer.test>\r\nTo: support@keepdesk.test\r\n"
        b"Subject: Broken widget\r\nMessage-ID: <erin-1@customer.test>\r\n"
        b"Date: Mon, 02 Mar 2026 08:00:00 +0000\r\n\r\nThe widget broke.\r\n"
    )
    async with runtime.db.session(write=True) as session:
        result = await ingest.ingest(
            session,
            runtime=runtime,
            mailbox=None,
            raw=raw,
            blob_key=runtime.blobs.put(raw),
            now=runtime.clock.now(),
        )
        await session.commit()
    assert result.ticket_number is not None
    alice = await pages.sign_in("alice")
    page = (await alice.get(f"/tickets/{result.ticket_number}")).text
    assert "From erin@customer.test" in page
    assert "Threaded here:" in page


async def test_the_side_panel_changes_one_field_in_place(world: World, pages: Pages) -> None:
    api = world.client("dave")
    ticket = await open_ticket(api)
    number = ticket["number"]
    dave = await pages.sign_in("dave")

    taken = await dave.post(
        f"/tickets/{number}/properties",
        {"assignee": "me", "orig_assignee": "none", "expected_version": "1"},
        htmx=True,
    )
    assert taken.status_code == 200
    assert taken.text.lstrip().startswith('<aside id="side_panel"')
    assert 'id="ticket_head" class="ticket-head" hx-swap-oob="true"' in taken.text
    assert "Assigned to <strong>Dave Support</strong>" in taken.text
    # The composer moves on to the new version: the change was the agent's own.
    assert re.search(r'id="expected_version"[^>]*value="2" hx-swap-oob="true"', taken.text)

    # Meanwhile alice raises the priority; dave's panel still shows "normal" when he sets the
    # status. His stale panel must not undo her change, and his composer keeps its version.
    await world.client("alice").patch(f"/api/v1/tickets/{number}", json={"priority": "urgent"})
    changed = await dave.post(
        f"/tickets/{number}/properties",
        {
            "status": "pending",
            "orig_status": "open",
            "priority": "normal",
            "orig_priority": "normal",
            "expected_version": "2",
        },
        htmx=True,
    )
    assert changed.status_code == 200
    after = (await api.get(f"/api/v1/tickets/{number}")).json()
    assert (after["status"], after["priority"]) == ("pending", "urgent")
    assert re.search(r'id="expected_version"[^>]*value="2" hx-swap-oob="true"', changed.text)

    refused = await dave.post(
        f"/tickets/{number}/properties",
        {"assignee": str(world.ids["bob"]), "orig_assignee": str(world.ids["dave"])},
        htmx=True,
    )
    assert refused.status_code == 200
    assert "Bob Billing is not a member of this ticket&#39;s team" in refused.text

    # Without JavaScript the panel is a form that comes back to the page.
    plain = await dave.post(f"/tickets/{number}/properties", {"tags": "vip", "orig_tags": ""})
    assert plain.status_code == 303
    assert plain.headers["location"] == f"/tickets/{number}"


async def test_the_composer_sends_and_warns_about_a_stale_ticket(
    world: World, pages: Pages
) -> None:
    api = world.client("dave")
    ticket = await open_ticket(api)
    number = ticket["number"]
    dave = await pages.sign_in("dave")

    sent = await dave.post(
        f"/tickets/{number}/messages",
        {"kind": "reply", "body": "We are on it.", "expected_version": "1"},
        htmx=True,
        files={"attachments": ("log.txt", b"line 1\n", "text/plain")},
    )
    assert sent.status_code == 200, sent.text
    assert sent.text.lstrip().startswith('<div id="ticket_body"')
    assert "We are on it." in sent.text and "Queued for sending" in sent.text
    assert "log.txt" in sent.text
    version = int(re.findall(r'name="expected_version" value="(\d+)"', sent.text)[0])

    await world.client("alice").post(
        f"/api/v1/tickets/{number}/messages", json={"kind": "reply", "body": "Done already."}
    )
    stale = await dave.post(
        f"/tickets/{number}/messages",
        {"kind": "reply", "body": "Second answer", "expected_version": str(version)},
        htmx=True,
    )
    assert stale.status_code == 409
    assert stale.headers["hx-retarget"] == "#composer_warning"
    assert "The ticket changed since you opened it" in stale.text
    current = re.search(r'name="force" value="(\d+)"', stale.text)
    assert current and int(current.group(1)) > version
    thread = (await api.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    assert [m["body_text"] for m in thread][-1] == "Done already."

    review = await dave.get(f"/tickets/{number}", htmx=True, headers={"HX-Target": "conversation"})
    assert review.text.lstrip().startswith('<div id="conversation"')
    assert "Done already." in review.text
    assert f'value="{current.group(1)}" hx-swap-oob="true"' in review.text
    assert '<div id="composer_warning" hx-swap-oob="true"></div>' in review.text

    anyway = await dave.post(
        f"/tickets/{number}/messages",
        {
            "kind": "reply",
            "body": "Second answer",
            "expected_version": str(version),
            "force": current.group(1),
        },
        htmx=True,
    )
    assert anyway.status_code == 200
    assert "Second answer" in anyway.text

    empty = await dave.post(
        f"/tickets/{number}/messages", {"kind": "note", "body": "  "}, htmx=True
    )
    assert empty.status_code == 422
    assert "a message needs a body or an attachment" in empty.text
