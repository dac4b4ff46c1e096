"""Attachments: uploaded as base64, stored by content hash with a safe name, served only as
downloads, and refused whole when too big or not base64."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.tickets.conftest import assert_error, b64, count_rows, get_ticket, post_message

PDF = b"%PDF-1.4 the invoice\n" + bytes(range(256))
LIMIT = 2048


def upload(
    filename: str, data: bytes, content_type: str = "application/octet-stream"
) -> dict[str, Any]:
    return {"filename": filename, "content_type": content_type, "content_base64": b64(data)}


def blob_files(runtime: Runtime) -> list[Path]:
    root = runtime.settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_carols_files_arrive_with_safe_names_and_download_as_attachments(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    ticket = await open_ticket(
        dave,
        attachments=[
            upload("../../etc/passwd", b"root:x:0:0\n", "text/plain"),
            upload("invoice\u202efdp.exe", PDF, "Application/PDF"),
        ],
    )
    number = ticket["number"]
    first = (await dave.get(f"/api/v1/tickets/{number}/messages")).json()["items"][0]
    assert [(a["filename"], a["content_type"], a["size"]) for a in first["attachments"]] == [
        ("passwd", "text/plain", 11),
        ("invoicefdp.exe", "application/pdf", len(PDF)),
    ]

    passwd_id, pdf_id = (a["id"] for a in first["attachments"])
    download = await dave.get(f"/api/v1/tickets/{number}/attachments/{pdf_id}")
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith(
        'attachment; filename="invoicefdp.exe"'
    )
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-security-policy"].startswith("sandbox")
    passwd = await dave.get(f"/api/v1/tickets/{number}/attachments/{passwd_id}")
    assert passwd.content == b"root:x:0:0\n"
    assert passwd.headers["content-disposition"].startswith('attachment; filename="passwd"')

    key = hashlib.sha256(PDF).hexdigest()
    blob = runtime.settings.data_dir / "blobs" / key[:2] / key[2:4] / key
    assert blob.read_bytes() == PDF
    assert sorted(p.name for p in blob_files(runtime)) == sorted(
        [key, hashlib.sha256(b"root:x:0:0\n").hexdigest()]
    )

    # dave answers with a file of his own; the same bytes are stored once.
    replied = await post_message(
        dave, number, body="Here is the corrected one.", attachments=[upload("fixed.pdf", PDF)]
    )
    assert [(a["filename"], a["size"]) for a in replied["message"]["attachments"]] == [
        ("fixed.pdf", len(PDF))
    ]
    again = replied["message"]["attachments"][0]["id"]
    assert (await dave.get(f"/api/v1/tickets/{number}/attachments/{again}")).content == PDF
    assert len(blob_files(runtime)) == 2

    # A file alone is a message too.
    only_file = await post_message(
        dave, number, kind="note", body="", attachments=[upload("x.txt", b"x")]
    )
    assert only_file["message"]["body_text"] == ""


async def test_active_content_is_only_ever_a_download(world: World) -> None:
    dave = world.client("dave")
    page = b"<html><script>alert(document.cookie)</script></html>"
    ticket = await open_ticket(
        dave,
        attachments=[
            upload("page.html", page, "text/html"),
            upload("logo.svg", b"<svg onload='alert(1)'/>", "image/svg+xml"),
            upload("shouting.htm", page, "TEXT/HTML"),
            upload("charset.html", page, "text/html; charset=utf-8"),
            upload("feed.xml", page, "application/atom+xml"),
        ],
    )
    number = ticket["number"]
    first = (await dave.get(f"/api/v1/tickets/{number}/messages")).json()["items"][0]
    assert len(first["attachments"]) == 5
    for attachment in first["attachments"]:
        download = await dave.get(f"/api/v1/tickets/{number}/attachments/{attachment['id']}")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/octet-stream", attachment
        assert download.headers["content-disposition"].startswith("attachment;")
        assert download.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in download.headers["content-security-policy"]


@pytest.mark.parametrize("settings_changes", [{"tickets_max_attachment_bytes": LIMIT}])
async def test_a_file_over_the_limit_or_not_base64_is_refused_and_nothing_is_kept(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    too_big = upload("big.bin", b"x" * (LIMIT + 1))
    fits = upload("fits.bin", b"y" * LIMIT)
    not_base64 = {"filename": "a.txt", "content_base64": "this is not base64!"}
    new = {
        "subject": "Files",
        "body": "See attached.",
        "requester": {"email": "carol@customer.test"},
    }

    for attachments, code in (
        ([fits, too_big], "attachment_too_large"),
        ([not_base64], "invalid_input"),
        ([{"filename": "a.txt", "content_base64": "aGVsbG8"}], "invalid_input"),
        ([{"filename": "", "content_base64": "aGVsbG8="}], "invalid_input"),
    ):
        response = await dave.post("/api/v1/tickets", json=new | {"attachments": attachments})
        assert_error(response, 422, code)
    assert await count_rows(runtime) == (0, 0)
    assert blob_files(runtime) == []

    ticket = await open_ticket(dave, attachments=[fits])
    number = ticket["number"]
    assert ticket["number"] == 1000
    for attachments in ([too_big], [not_base64]):
        response = await dave.post(
            f"/api/v1/tickets/{number}/messages",
            json={"kind": "reply", "body": "Bigger one", "attachments": attachments},
        )
        assert response.status_code == 422, response.text
    assert await count_rows(runtime) == (1, 1)
    assert (await get_ticket(dave, number))["version"] == 1
    assert len(blob_files(runtime)) == 1


async def test_an_attachment_is_reached_only_through_its_own_ticket(world: World) -> None:
    dave, bob = world.client("dave"), world.client("bob")
    support = await open_ticket(dave, attachments=[upload("a.txt", b"Support's file")])
    billing = await open_ticket(bob, attachments=[upload("b.txt", b"Billing's file")])
    other = await open_ticket(dave)
    thread = (await dave.get(f"/api/v1/tickets/{support['number']}/messages")).json()["items"]
    attachment_id = thread[0]["attachments"][0]["id"]
    bobs_thread = (await bob.get(f"/api/v1/tickets/{billing['number']}/messages")).json()
    bobs_id = bobs_thread["items"][0]["attachments"][0]["id"]

    ok = await dave.get(f"/api/v1/tickets/{support['number']}/attachments/{attachment_id}")
    assert ok.content == b"Support's file"
    for number, wanted in (
        (other["number"], attachment_id),
        (support["number"], bobs_id),
        (support["number"], bobs_id + 100),
    ):
        response = await dave.get(f"/api/v1/tickets/{number}/attachments/{wanted}")
        assert_error(response, 404, "not_found")
        assert "file" not in response.text


async def test_html_from_outside_is_stored_inert(world: World) -> None:
    dave = world.client("dave")
    hostile = (
        "<p>Hello <b>team</b></p>"
        "<script>alert(1)</script>"
        '<img src="x" onerror="alert(2)">'
        '<a href="javascript:alert(3)">click</a>'
        '<a href="https://example.com/help">help</a>'
        '<div hx-get="/api/v1/tickets" hx-trigger="load">htmx</div>'
        '<iframe src="https://evil.example"></iframe>'
        '<form action="https://evil.example"><input name="password"></form>'
        "<svg><script>alert(4)</script></svg>"
        '<p style="color: red; background-image: url(javascript:alert(5))">styled</p>'
    )
    ticket = await open_ticket(dave, body="Hello team", body_html=hostile)
    replied = await post_message(dave, ticket["number"], body="Answer", body_html=hostile)

    thread = (await dave.get(f"/api/v1/tickets/{ticket['number']}/messages")).json()["items"]
    assert thread[1] == replied["message"]
    for message in thread:
        html = message["body_html"]
        lowered = html.lower()
        for dangerous in (
            "<script",
            "onerror",
            "javascript:",
            "hx-",
            "<iframe",
            "<form",
            "<input",
            "<svg",
            "alert(",
        ):
            assert dangerous not in lowered, (dangerous, html)
        assert "<p>Hello <b>team</b></p>" in html
        assert 'href="https://example.com/help"' in html
        assert 'rel="noopener noreferrer nofollow"' in html
        assert ">click</a>" in html
        assert "color:red" in html.replace(" ", "")
    assert thread[0]["body_text"] == "Hello team"
