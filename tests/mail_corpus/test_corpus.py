"""Every corpus mail through real IMAP and the production fetcher ends as MANIFEST.md says.

One case per `.eml`: APPEND it to a fresh account, run `fetch_once`, then look through the REST
API as alice (admin): the ticket and its messages, or the quarantine record; the outbox for
auto-acks; the IMAP folders; the raw bytes in the blob store. `EXPECTED` holds every file's
verdict and its own checks, keyed by number; a corpus file without an entry fails, so a new one
is noticed. Whatever the verdict, no script or event handler from any mail survives into an API
`body_html`, and every attachment name is safe and served as a download.

Files marked `thread` need ticket #1234 for their MANIFEST verdict: here they arrive alone (as
at a fresh install); test_threading_fixtures.py delivers them onto #1234.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keepdesk.mail.fetcher import FetchReport
from keepdesk.mail.models import MailMessage, MailReceipt, ReceiptOutcome
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.tickets.models import Attachment
from tests.mail_corpus import test_threading_fixtures
from tests.mail_corpus.conftest import (
    CORPUS,
    PROCESSED_FOLDER,
    QUARANTINE_FOLDER,
    Desk,
    corpus_mail,
)
from tests.mail_corpus.invariants import check_download, check_html, check_name, files_outside

# The async tests run on the loop of the module's keepdesk instance (see conftest.py).
on_instance = pytest.mark.asyncio(loop_scope="module")


class Verdict(StrEnum):
    INGEST = "ingest"  # a ticket (or a message on one)
    QUARANTINE = "quarantine"  # held with a reason, nothing created
    LOOP = "loop"  # keepdesk's own mail back: kept raw, nothing created


@dataclass
class Outcome:
    """What one fetch of one corpus mail left behind."""

    path: Path
    stored: bytes  # the mail as the IMAP server holds it
    report: FetchReport
    receipt: MailReceipt
    tickets: list[dict[str, Any]]
    messages: list[dict[str, Any]]  # of the one ticket, if any
    quarantine: list[dict[str, Any]]
    outbox: list[OutboxMessage]
    mail: MailMessage | None
    attachments: list[Attachment]  # the rows, for what the API does not show
    downloads: dict[str, httpx.Response] = field(default_factory=dict)  # by filename

    @property
    def ticket(self) -> dict[str, Any]:
        [ticket] = self.tickets
        return ticket

    @property
    def message(self) -> dict[str, Any]:
        [message] = self.messages
        return message

    @property
    def names(self) -> list[str]:
        return [a["filename"] for a in self.message["attachments"]]


Check = Callable[[Outcome], None]


@dataclass(frozen=True)
class Expect:
    verdict: Verdict
    reason: str | None = None  # the quarantine reason code
    subject: str | None = None
    requester: str | None = None
    name: str | None = None  # the requester's display name
    ack: bool = False  # exactly one auto-ack, to the requester
    attachments: list[str] | None = None  # safe names, in order
    text: str | None = None  # in the plain-text body
    defects: set[str] = field(default_factory=set)  # recorded on the mail (flagged)
    checks: tuple[Check, ...] = ()
    thread: bool = False  # its MANIFEST verdict needs #1234: see test_threading_fixtures


# --- per-file checks ------------------------------------------------------------------------------


def _decoded_part(path: Path, filename: str) -> bytes:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    [part] = [p for p in msg.walk() if p.get_filename() == filename]
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def same_bytes_as_part(filename: str, content_type: str | None = None) -> Check:
    """Stored with the SHA-256 of the decoded part, and downloaded as such (004, 007)."""

    def check(o: Outcome) -> None:
        response = o.downloads[filename]
        expected = _decoded_part(o.path, filename)
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(expected).digest()
        if content_type is not None:
            assert response.headers["content-type"] == content_type

    return check


def inline(names: set[str]) -> Check:
    """Shown in place through `cid:`, so not an extra attachment in the view (004, 005, 710)."""

    def check(o: Outcome) -> None:
        assert {a.filename for a in o.attachments if a.is_inline} == names

    return check


def html_has(*fragments: str) -> Check:
    def check(o: Outcome) -> None:
        html = o.message["body_html"]
        assert html is not None
        for fragment in fragments:
            assert fragment in html

    return check


def not_verified(o: Outcome) -> None:
    assert o.mail is not None and o.mail.sender_verified is False
    assert "NOT verified" in o.mail.thread_reason


def synthetic_message_id(o: Outcome) -> None:
    # Deterministic, from mailbox, UIDVALIDITY, UID and content (308); never random.
    assert o.mail is not None and o.mail.header_message_id.startswith("<synthetic-")


def ack_only_to_from(o: Outcome) -> None:
    # 312: Reply-To names two others; the acknowledgement goes to the From alone.
    [ack] = o.outbox
    assert ack.recipients == ["alice@example.com"]


def subject_cut_with_ellipsis(o: Outcome) -> None:
    subject = o.ticket["subject"]
    assert 900 < len(subject) <= 998 and subject.endswith("\u2026")
    assert len(o.message["body_text"]) > 100_000  # the 120 KB line is kept whole


def empty_body(o: Outcome) -> None:
    assert o.message["body_text"] in ("", "(empty message)")
    assert o.message["body_html"] is None and o.message["attachments"] == []


def no_c1_controls(o: Outcome) -> None:
    text = o.ticket["subject"] + o.message["body_text"]
    assert not any(0x80 <= ord(c) < 0xA0 for c in text)
    assert "“quoted” … price € 12 \u2013 done" in o.message["body_text"]


def literal_markup(o: Outcome) -> None:
    # Shown as text wherever it appears: JSON carries it unchanged, renderers escape it.
    assert "<script>alert('encoded-subject')</script>" in o.ticket["subject"]
    assert o.ticket["requester"]["name"] == "<script>alert('from-name')</script>"


def literal_templates(o: Outcome) -> None:
    # 501: `{{7*7}}` is never rendered as a template.
    assert "{{7*7}}" in (o.message["body_html"] or "")


def no_overlay(o: Outcome) -> None:
    # 501: the fake login overlay loses `position:fixed`; it cannot cover the keepdesk UI.
    assert "position" not in (o.message["body_html"] or "")


def no_local_urls(o: Outcome) -> None:
    # 505: schemes other than http(s), mailto, cid and data are gone.
    html = o.message["body_html"] or ""
    assert "file:" not in html and "gopher:" not in html


def count_attachments(count: int) -> Check:
    def check(o: Outcome) -> None:
        assert len(o.message["attachments"]) == count

    return check


def long_names(o: Outcome) -> None:
    assert len(o.names) == 2
    for name in o.names:
        assert len(name.encode()) <= 255 and name.endswith(".txt")


def possibly_damaged(name: str) -> Check:
    def check(o: Outcome) -> None:
        assert o.mail is not None and name in o.mail.facts["possibly_damaged"]
        assert o.downloads[name].content.startswith(b"%PDF-1.4")

    return check


def octet_stream_only(o: Outcome) -> None:
    assert {a["content_type"] for a in o.message["attachments"]} == {"application/octet-stream"}


def downloads_not_active(*names: str) -> Check:
    # 108-110: a declared type is never trusted to render HTML, SVG or XML on our origin.
    def check(o: Outcome) -> None:
        for name in names:
            assert o.downloads[name].headers["content-type"] == "application/octet-stream"

    return check


def crlf_as_delivered(o: Outcome) -> None:
    # 605: the mail reaches us over IMAP as its CRLF equivalent; the attachment holds exactly
    # the part's bytes as delivered, with no line-ending conversion of our own.
    assert o.downloads["lf.txt"].content == b"line1\r\nline2"


def ordered_paragraphs(o: Outcome) -> None:
    text = o.message["body_text"]
    assert text.index("First paragraph") < text.index("Second paragraph")


def header_split_ignored(o: Outcome) -> None:
    # 606: the stdlib splits the Subject at the bare CR; the piece after it drives nothing.
    assert o.ticket["subject"] == "Bare CR"
    assert o.ticket["priority"] == "normal" and o.ticket["tags"] == []


ALICE = "alice@example.com"
MALLORY = "mallory@example.net"
HANAKO = "hanako@example.com"
INGEST = Verdict.INGEST
QUARANTINE = Verdict.QUARANTINE

EXPECTED: dict[str, Expect] = {
    # 0xx: ordinary structures
    "001": Expect(
        INGEST,
        subject="Grüße aus München",
        requester="juergen@example.org",
        name="Jürgen Weiß",
        ack=True,
        text="„Papierstau“ \u2013 obwohl",
    ),
    "002": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        text="See portal <https://portal.example.com/inv/77>",  # derived from the HTML
        checks=(html_has('href="https://portal.example.com/inv/77"', "noopener noreferrer"),),
    ),
    "003": Expect(
        INGEST,
        subject="Password reset does not arrive",
        requester=ALICE,
        ack=True,
        text="never arrives",  # one message with both versions: the HTML shown, the text kept
        checks=(html_has("<p>"),),
    ),
    "004": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["logo.png", "Q1-report.pdf"],
        checks=(inline({"logo.png"}), same_bytes_as_part("Q1-report.pdf", "application/pdf")),
    ),
    "005": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["attachment-1.png"],
        checks=(inline({"attachment-1.png"}), html_has("cid:shot-1@example.com")),
    ),
    "007": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["contract.pdf"],
        checks=(same_bytes_as_part("contract.pdf", "application/pdf"),),
    ),
    # 1xx: attachments and their names
    "101": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["€ Rechnung März.txt", "日本語のファイル.txt", "Ärger über Größe.txt"],
    ),
    "102": Expect(INGEST, requester=ALICE, ack=True, attachments=["Änderungsantrag.docx"]),
    "103": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=[
            "passwd",
            "settings.py",
            "keepdesk.db",
            "x.txt",
            "%2e%2e%2f%2e%2e%2fencoded.txt",
        ],
    ),
    "105": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=["invoice.pdf.exe", "html.txt", "invoicefdp.exe", "tabandescape.txt"],
    ),
    "106": Expect(INGEST, requester=ALICE, ack=True, checks=(long_names,)),
    "108": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=["invoice.pdf.exe", "photo.png", "notes.html"],
        checks=(inline(set()),),  # not even the "image/png" that is HTML
    ),
    "109": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=["logo.svg"],
        checks=(inline(set()), downloads_not_active("logo.svg")),
    ),
    "110": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=["form.html", "x.xhtml"],
        checks=(downloads_not_active("form.html", "x.xhtml"),),
    ),
    "112": Expect(
        INGEST, requester=ALICE, ack=True, attachments=["winmail.dat"], text="See attached"
    ),
    "113": Expect(
        INGEST,
        requester="bob@example.org",
        ack=False,  # an invitation is never answered automatically
        attachments=["attachment-1.ics", "invite.ics"],
        text="You have been invited",
    ),
    "115": Expect(INGEST, requester=ALICE, ack=True, checks=(count_attachments(300),)),
    # 2xx: charsets and encoded-words
    "201": Expect(
        INGEST,
        subject="Problème de facturation à régler",
        requester="francois@example.org",
        name="François Léger",
        ack=True,
        text="n° 42 est erronée",
    ),
    "202": Expect(
        INGEST,
        subject="Smart quotes “and” euro €",
        requester=ALICE,
        ack=True,
        checks=(no_c1_controls,),
    ),
    "203": Expect(
        INGEST,
        subject="プリンターが見えません",
        requester=HANAKO,
        name="田中 花子",
        ack=True,
        text="プリンターが見えません",
    ),
    "204": Expect(
        INGEST,
        subject="プリンターが見えません",
        requester=HANAKO,
        name="田中 花子",
        ack=True,
        text="プリンターが見えません",
    ),
    "206": Expect(
        INGEST,
        subject="Привет, принтер",
        requester="ivan@example.org",
        name="Иван Петров",
        ack=True,
    ),
    "207": Expect(
        INGEST,
        subject="Raw UTF-8 in header \u2013 no MIME at all",
        requester="zoe@example.org",
        ack=True,
        text="naïve café, 東京",
    ),
    "209": Expect(
        INGEST,
        subject="Unknown charset subject",
        requester=ALICE,
        ack=True,
        text="charset nobody knows",
        checks=(html_has("+ADw-script+AD4-"),),  # decoded UTF-7 stays inert text
    ),
    "210": Expect(
        INGEST, subject="🔥 Printer on fire — caça brûle 火事", requester=ALICE, ack=True
    ),
    # 3xx: identity, threading and deduplication
    "301": Expect(INGEST, subject="Printer on fire", requester=ALICE, ack=True, thread=True),
    "302": Expect(INGEST, requester=ALICE, ack=True, thread=True),
    "304": Expect(INGEST, requester=ALICE, ack=True, thread=True),
    "305": Expect(INGEST, requester=MALLORY, ack=True, thread=True),
    "307": Expect(INGEST, requester="dana.agent@example.com", checks=(not_verified,), thread=True),
    "308": Expect(INGEST, requester=ALICE, ack=True, checks=(synthetic_message_id,)),
    "309": Expect(
        INGEST, subject="Shipment notice 1", requester="noreply@parcels.example.org", ack=True
    ),
    "311": Expect(INGEST, subject="Printer on fire", requester=ALICE, ack=True, thread=True),
    "312": Expect(INGEST, requester=ALICE, ack=True, checks=(ack_only_to_from,), thread=True),
    # Untrusted From headers: never mapped to alice@ or anyone (AC-12).
    "314": Expect(QUARANTINE, reason="unverified_sender"),
    "315": Expect(QUARANTINE, reason="unverified_sender"),
    "317": Expect(QUARANTINE, reason="unverified_sender"),
    "318": Expect(QUARANTINE, reason="unverified_sender"),
    "320": Expect(QUARANTINE, reason="unverified_sender"),
    "321": Expect(INGEST, requester="bob@example.org", ack=True),
    "323": Expect(INGEST, requester=ALICE, checks=(not_verified,), thread=True),
    # 4xx: auto-replies, bounces, lists and loops
    "401": Expect(INGEST, requester="bob@example.org", thread=True),
    "402": Expect(INGEST, requester="bob@example.org"),
    "403": Expect(INGEST, requester="news@example.org"),
    "405": Expect(INGEST, requester="bob@example.org"),
    "407": Expect(Verdict.LOOP),
    # Alone, a delivery report names no mail keepdesk sent: held, never a customer ticket.
    "408": Expect(QUARANTINE, reason="unmatched_bounce", thread=True),
    "409": Expect(QUARANTINE, reason="unmatched_bounce", thread=True),
    "411": Expect(INGEST, requester="support@tickets.example.net", thread=True),
    # 5xx: active content, XSS, template injection and remote resources
    "501": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        text="Plain part is harmless",
        checks=(literal_templates, no_overlay),
    ),
    "502": Expect(INGEST, requester=MALLORY, ack=True, checks=(literal_markup,)),
    "504": Expect(
        INGEST,
        requester=MALLORY,
        ack=True,
        attachments=["\"><img src=x onerror=alert('filename')>.png"],  # escaped where shown
    ),
    "505": Expect(
        INGEST, requester=MALLORY, ack=True, text="Tracking pixel", checks=(no_local_urls,)
    ),
    # 6xx: size, header and line-ending edge cases
    "601": Expect(QUARANTINE, reason="too_many_headers"),
    "602": Expect(INGEST, requester=ALICE, ack=True, checks=(subject_cut_with_ellipsis,)),
    "603": Expect(INGEST, subject="(no subject)", requester=ALICE, ack=True, checks=(empty_body,)),
    "605": Expect(
        INGEST,
        subject="Stored with bare LF (maildir style)",
        requester=ALICE,
        ack=True,
        attachments=["lf.txt"],
        text="LF only.",
        checks=(crlf_as_delivered,),
    ),
    "606": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        defects={"bare_cr_in_header"},
        checks=(header_split_ignored,),
    ),
    "608": Expect(QUARANTINE, reason="unverified_sender"),  # CR/LF in the From name
    "610": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        checks=(html_has("<p>HTML without MIME-Version.</p>"),),
    ),
    # 7xx: MIME and transfer-encoding errors, and bombs
    "701": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["truncated.pdf"],
        checks=(possibly_damaged("truncated.pdf"),),
    ),
    "702": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        text="Invalid escapes: =ZZ =G1 =4 endLowercase hex: été",
    ),
    "704": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["big.pdf"],
        text="Text part is complete.",
        defects={"close_boundary_not_found"},
        checks=(possibly_damaged("big.pdf"),),
    ),
    "705": Expect(INGEST, requester=ALICE, ack=True, defects={"duplicate_boundary_parameter"}),
    "707": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        text="x-uuencode but this is plain text",
        checks=(octet_stream_only,),
    ),
    "709": Expect(
        INGEST,
        subject="Signed message",
        requester=ALICE,
        ack=True,
        attachments=["extra.asc", "smime.p7s"],
        text="Signed body",
    ),
    "710": Expect(
        INGEST,
        requester=ALICE,
        ack=True,
        attachments=["inline.png"],
        text="First paragraph",
        checks=(ordered_paragraphs,),
    ),
    "711": Expect(QUARANTINE, reason="too_deep"),
    "713": Expect(QUARANTINE, reason="too_many_parts"),
}


# --- what holds for every mail -------------------------------------------------------------------

# Downloads checked per mail; 115 has 300, and the first ones say as much as all of them.
MAX_DOWNLOADS = 12


async def deliver(desk: Desk, path: Path) -> Outcome:
    # AC-19 (103): whatever the names say, nothing is written outside the blob store.
    settings = desk.runtime.settings
    before = files_outside(settings.data_dir.parent, settings.blob_dir)
    stored = await desk.deliver(await asyncio.to_thread(path.read_bytes))
    report = await desk.fetch()
    assert files_outside(settings.data_dir.parent, settings.blob_dir) == before

    [receipt] = await desk.receipts()
    tickets = await desk.tickets()
    messages = await desk.messages(tickets[0]["number"]) if len(tickets) == 1 else []
    async with desk.runtime.db.session() as session:
        rows = (await session.scalars(select(Attachment).order_by(Attachment.id))).all()
    mails = await desk.mail_messages()
    outcome = Outcome(
        path=path,
        stored=stored,
        report=report,
        receipt=receipt,
        tickets=tickets,
        messages=messages,
        quarantine=await desk.quarantine(),
        outbox=await desk.outbox(),
        mail=mails[0] if mails else None,
        attachments=list(rows),
    )
    for message in messages:
        for attachment in message["attachments"][:MAX_DOWNLOADS]:
            response = await desk.alice.get(
                f"/api/v1/tickets/{tickets[0]['number']}/attachments/{attachment['id']}"
            )
            outcome.downloads[attachment["filename"]] = response
    return outcome


async def check_common(desk: Desk, o: Outcome, expect: Expect) -> None:
    assert (o.report.fetched, o.report.errors) == (1, [])
    # AC-9: the raw bytes are stored exactly as the server returned them, whatever the verdict.
    desk.assert_raw_kept(o.receipt, o.stored)
    assert o.receipt.imap_done
    # Only after the commit did the mail leave the INBOX, for the folder its verdict names.
    assert await desk.imap.count("INBOX") == 0
    folder = QUARANTINE_FOLDER if expect.verdict == Verdict.QUARANTINE else PROCESSED_FOLDER
    assert await desk.in_folder(folder) == 1

    if expect.verdict == Verdict.INGEST:
        assert o.receipt.outcome == ReceiptOutcome.ingested
        assert len(o.tickets) == 1 and o.quarantine == []
        assert o.mail is not None and o.mail.raw_blob_key == o.receipt.content_sha256
    else:
        assert o.tickets == []
    if expect.verdict == Verdict.QUARANTINE:
        assert o.receipt.outcome == ReceiptOutcome.quarantined
        [held] = o.quarantine
        assert held["reason"] == expect.reason and held["detail"]
        assert held["uid"] is not None and held["uidvalidity"] is not None
        raw = await desk.alice.get(f"/api/v1/quarantine/{held['id']}/raw")
        assert raw.status_code == 200 and raw.content == o.stored  # an admin can download it
    if expect.verdict == Verdict.LOOP:
        assert o.receipt.outcome == ReceiptOutcome.loop and o.quarantine == []

    # No mail goes anywhere but one acknowledgement to the requester, when one is due.
    assert all(row.kind == OutboxKind.auto_ack for row in o.outbox)
    if expect.ack:
        [ack] = o.outbox
        assert ack.recipients == [o.ticket["requester"]["email"]]
    else:
        assert o.outbox == []

    for ticket in o.tickets:
        assert not set("\r\n\x00") & set(ticket["subject"] + ticket["requester"]["name"])
    for message in o.messages:
        check_html(message["body_html"])
        assert "\x00" not in message["body_text"]
        for attachment in message["attachments"]:
            check_name(attachment["filename"])
    for name, response in o.downloads.items():
        check_download(response, name)
        [row] = [a for a in o.attachments if a.filename == name]
        assert hashlib.sha256(response.content).hexdigest() == row.blob_key


def check_expected(o: Outcome, expect: Expect) -> None:
    if expect.verdict == Verdict.INGEST:
        assert expect.requester is not None, "say whose ticket it must be"
    if expect.subject is not None:
        assert o.ticket["subject"] == expect.subject
    if expect.requester is not None:
        assert o.ticket["requester"]["email"] == expect.requester
    if expect.name is not None:
        assert o.ticket["requester"]["name"] == expect.name
    if expect.attachments is not None:
        assert o.names == expect.attachments
    if expect.text is not None:
        assert expect.text in o.message["body_text"]
    if expect.defects:
        assert o.mail is not None
        recorded = {d.rpartition(": ")[2] for d in o.mail.facts["defects"]}
        assert expect.defects <= recorded
    for check in expect.checks:
        check(o)


def _corpus_files() -> list[Any]:
    if not CORPUS.is_dir():
        reason = f"the shared corpus is not at {CORPUS} (CI has it)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(path, id=path.name[:3]) for path in sorted(CORPUS.glob("*.eml"))]


@on_instance
@pytest.mark.parametrize("path", _corpus_files())
async def test_corpus_mail_ends_as_the_manifest_says(desk: Desk, path: Path) -> None:
    number = path.name[:3]
    assert number in EXPECTED, f"{path.name} is new: add its MANIFEST verdict to EXPECTED"
    expect = EXPECTED[number]
    outcome = await deliver(desk, path)
    await check_common(desk, outcome, expect)
    check_expected(outcome, expect)


def test_every_expectation_names_a_corpus_file() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS} (CI has it)")
    present = {path.name[:3] for path in CORPUS.glob("*.eml")}
    assert set(EXPECTED) <= present


def test_every_thread_fixture_is_delivered_onto_its_ticket() -> None:
    needing = {number for number, expect in EXPECTED.items() if expect.thread}
    assert needing == test_threading_fixtures.COVERED


@on_instance
async def test_an_htmx_attribute_in_mail_never_reaches_a_page(desk: Desk) -> None:
    # No corpus mail carries hx-*; a page that swaps customer HTML into itself would obey one.
    hostile = (
        b'<div hx-get="/api/v1/tickets" hx-trigger="load" data-hx-post="/x">poll</div>'
        b'<button hx-delete="/api/v1/tickets/1">x</button>'
    )
    raw = corpus_mail("610").replace(b"<p>HTML without MIME-Version.</p>", hostile)
    await desk.deliver(raw)
    await desk.fetch()
    [ticket] = await desk.tickets()
    [message] = await desk.messages(ticket["number"])
    assert message["body_html"] is not None and "poll" in message["body_html"]
    check_html(message["body_html"])
    assert "hx-" not in message["body_html"]


@on_instance
async def test_no_data_url_link_survives(desk: Desk) -> None:
    await desk.deliver(corpus_mail("501"))
    await desk.fetch()
    [ticket] = await desk.tickets()
    [message] = await desk.messages(ticket["number"])
    assert "data:" not in (message["body_html"] or "")
