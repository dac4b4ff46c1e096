"""Every hostile corpus mail through parse_mail, checked against MANIFEST at the parsing level.

Quarantine by limits, subject text, whether the sender is verified, attachment names and the
automation class are decided here; what ingestion does with them is tested elsewhere.
"""

import email
import email.policy
import hashlib
import operator
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepdesk.mail.limits import MailLimits
from keepdesk.mail.parsing import ParsedMail, Rejected, parse_mail

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
OURS = frozenset({"support@example.com", "billing@example.com"})
ALICE = ("alice@example.com", True)

# Quarantined at parse time because a limit (AC-7) is exceeded.
REJECTED = {"601": "too_many_headers", "711": "too_deep", "713": "too_many_parts"}


@dataclass(frozen=True)
class Expect:
    subject: str | None = None
    sender: tuple[str | None, bool] | None = None  # (address, is_verified)
    attachments: list[str] | None = None
    reasons: set[str] = field(default_factory=set)  # exactly these automation reasons
    text: str | None = None  # appears in the plain-text body
    defects: set[str] = field(default_factory=set)  # at least these
    check: Callable[[ParsedMail], None] | None = None


def _equals(attribute: str, expected: object) -> Callable[[ParsedMail], None]:
    def check(mail: ParsedMail) -> None:
        assert operator.attrgetter(attribute)(mail) == expected

    return check


def _attachment_count(count: int) -> Callable[[ParsedMail], None]:
    def check(mail: ParsedMail) -> None:
        assert len(mail.attachments) == count

    return check


def _inline(names: set[str]) -> Callable[[ParsedMail], None]:
    def check(mail: ParsedMail) -> None:
        assert {a.filename for a in mail.attachments if a.is_inline} == names

    return check


def _pdf_bytes(mail: ParsedMail) -> None:
    [pdf] = mail.attachments
    assert pdf.content_type == "application/pdf"
    assert pdf.data.startswith(b"%PDF-1.4") and pdf.data.endswith(b"%%EOF\n")


def _long_names(mail: ParsedMail) -> None:
    assert len(mail.attachments) == 2
    for attachment in mail.attachments:
        assert len(attachment.filename.encode()) <= 255
        assert attachment.filename.endswith(".txt")
        assert attachment.original_filename is not None


def _no_c1(mail: ParsedMail) -> None:
    assert not any(0x80 <= ord(c) < 0xA0 for c in mail.subject + mail.text_body)
    assert "“quoted” … price € 12 \u2013 done" in mail.text_body


def _utf7_inert(mail: ParsedMail) -> None:
    assert mail.html_body is not None and "+ADw-script+AD4-" in mail.html_body
    assert "<script" not in mail.html_body


def _bounce(action: str, recipient: str) -> Callable[[ParsedMail], None]:
    def check(mail: ParsedMail) -> None:
        bounce = mail.automation.bounce
        assert bounce is not None
        assert bounce.action == action
        assert bounce.recipients == [recipient]
        assert bounce.original_message_ids == ["<kd-1234-out-4@example.com>"]

    return check


def _threading(mail: ParsedMail) -> None:
    assert mail.in_reply_to == ["<kd-1234-out-1@example.com>"]
    assert mail.references == ["<root-1234@example.com>", "<kd-1234-out-1@example.com>"]


def _reply_to(mail: ParsedMail) -> None:
    assert [m.address for m in mail.reply_to] == ["erik@example.org", "mallory@example.net"]


def _bcc(mail: ParsedMail) -> None:
    assert mail.recipients.to == ["carol@example.net"]
    assert "support@example.com" in mail.recipients.all_addresses


def _markup_kept_as_text(mail: ParsedMail) -> None:
    assert "<script>alert('encoded-subject')</script>" in mail.subject
    assert mail.sender.display_name == "<script>alert('from-name')</script>"


def _cid_opaque(mail: ParsedMail) -> None:
    [image] = mail.attachments
    assert image.content_id is not None
    assert not set("<>\"' ") & set(image.content_id)


def _long_lines(mail: ParsedMail) -> None:
    assert len(mail.subject) > 50_000
    assert len(mail.text_body) > 100_000


def _lf_kept(mail: ParsedMail) -> None:
    [attachment] = mail.attachments
    assert attachment.data == b"line1\nline2"


def _flattened_from(mail: ParsedMail) -> None:
    assert "\r" not in mail.sender.display_name and "\n" not in mail.sender.display_name


def _html_only(mail: ParsedMail) -> None:
    assert mail.date is None
    assert mail.html_body == "<p>HTML without MIME-Version.</p>\n"


def _damaged(name: str) -> Callable[[ParsedMail], None]:
    def check(mail: ParsedMail) -> None:
        [attachment] = [a for a in mail.attachments if a.filename == name]
        assert attachment.is_possibly_damaged
        assert attachment.data.startswith(b"%PDF-1.4")

    return check


def _valid_types(mail: ParsedMail) -> None:
    assert {a.content_type for a in mail.attachments} == {"application/octet-stream"}


def _raw_html_kept(mail: ParsedMail) -> None:
    assert mail.html_body is not None
    assert "<script>alert('script tag')</script>" in mail.html_body  # sanitising comes later


def _both_paragraphs(mail: ParsedMail) -> None:
    assert "First paragraph" in mail.text_body and "Second paragraph" in mail.text_body
    assert mail.text_body.index("First") < mail.text_body.index("Second")


AUTO = {"auto_submitted"}
EXPECTATIONS: dict[str, Expect] = {
    "001": Expect(
        "Grüße aus München",
        ("juergen@example.org", True),
        [],
        text="„Papierstau“ \u2013 obwohl",
        check=_equals("sender.display_name", "Jürgen Weiß"),
    ),
    "002": Expect(
        "HTML only message", ALICE, [], text="portal <https://portal.example.com/inv/77>"
    ),
    "003": Expect("Password reset does not arrive", ALICE, [], text="never arrives. -- Alice"),
    "004": Expect(
        "Quarterly report attached",
        ALICE,
        ["logo.png", "Q1-report.pdf"],
        check=_inline({"logo.png"}),
    ),
    "005": Expect(
        "Screenshot of the error", ALICE, ["attachment-1.png"], check=_inline({"attachment-1.png"})
    ),
    "007": Expect("Signed contract", ALICE, ["contract.pdf"], check=_pdf_bytes),
    "101": Expect(
        attachments=["€ Rechnung März.txt", "日本語のファイル.txt", "Ärger über Größe.txt"]
    ),
    "102": Expect(attachments=["Änderungsantrag.docx"]),
    "103": Expect(
        sender=("mallory@example.net", True),
        attachments=[
            "passwd",
            "settings.py",
            "keepdesk.db",
            "x.txt",
            "%2e%2e%2f%2e%2e%2fencoded.txt",
        ],
    ),
    "105": Expect(
        attachments=["invoice.pdf.exe", "html.txt", "invoicefdp.exe", "tabandescape.txt"]
    ),
    "106": Expect(check=_long_names),
    "108": Expect(attachments=["invoice.pdf.exe", "photo.png", "notes.html"]),
    "109": Expect(attachments=["logo.svg"], check=_inline(set())),
    "110": Expect(attachments=["form.html", "x.xhtml"]),
    "112": Expect(attachments=["winmail.dat"], text="See attached"),
    "113": Expect(attachments=["attachment-1.ics", "invite.ics"], text="You have been invited"),
    "115": Expect(check=_attachment_count(300)),
    "201": Expect(
        "Problème de facturation à régler",
        ("francois@example.org", True),
        text="n° 42 est erronée",
        check=_equals("sender.display_name", "François Léger"),
    ),
    "202": Expect("Smart quotes “and” euro €", check=_no_c1),
    "203": Expect(
        "プリンターが見えません",
        text="プリンターが見えません",
        check=_equals("sender.display_name", "田中 花子"),
    ),
    "204": Expect(
        "プリンターが見えません",
        text="プリンターが見えません",
        check=_equals("sender.display_name", "田中 花子"),
    ),
    "206": Expect("Привет, принтер", check=_equals("sender.display_name", "Иван Петров")),
    "207": Expect("Raw UTF-8 in header \u2013 no MIME at all", text="naïve café, 東京"),
    "209": Expect("Unknown charset subject", ALICE, text="charset nobody knows", check=_utf7_inert),
    "210": Expect("🔥 Printer on fire — caça brûle 火事", ALICE),
    "301": Expect("Printer on fire", ALICE, check=_equals("message_id", "<root-1234@example.com>")),
    "302": Expect(sender=ALICE, check=_threading),
    "305": Expect("Re: [#1234] Printer on fire", ("mallory@example.net", True)),
    "307": Expect(sender=("dana.agent@example.com", True)),
    "308": Expect(check=_equals("message_id", None)),
    "311": Expect(check=_equals("message_id", "<root-1234@example.com>")),
    "312": Expect(sender=ALICE, check=_reply_to),
    "314": Expect(sender=(None, False), check=_equals("reply_to", [])),
    "315": Expect(sender=("mallory@example.net", False)),
    "317": Expect(sender=(None, False)),
    "318": Expect(sender=(None, False)),
    "320": Expect(sender=(None, False)),
    "321": Expect(sender=("bob@example.org", True), check=_bcc),
    "401": Expect(reasons=AUTO),
    "402": Expect(
        reasons={"autoreply_header"}, check=_equals("automation.suppresses_auto_reply", True)
    ),
    "403": Expect(reasons={"precedence", "list"}),
    "405": Expect(reasons={"precedence", "list"}),
    "407": Expect(reasons={"auto_submitted", "own_address"}),
    "408": Expect(
        reasons={"auto_submitted", "null_return_path", "bounce"},
        check=_bounce("failed", "nobody@example.net"),
    ),
    "409": Expect(
        reasons={"auto_submitted", "null_return_path", "bounce"},
        check=_bounce("delayed", "bob@example.org"),
    ),
    "411": Expect(reasons={"foreign_helpdesk"}),
    "501": Expect(text="Plain part is harmless", check=_raw_html_kept),
    "502": Expect(sender=("mallory@example.net", True), check=_markup_kept_as_text),
    "504": Expect(attachments=["\"><img src=x onerror=alert('filename')>.png"], check=_cid_opaque),
    "505": Expect(text="Tracking pixel"),
    "602": Expect(check=_long_lines),
    "603": Expect("", ALICE, [], check=_equals("text_body", "")),
    "605": Expect(
        "Stored with bare LF (maildir style)", ALICE, ["lf.txt"], text="LF only.", check=_lf_kept
    ),
    "606": Expect(
        "Bare CR", text="Body with NUL  byte", defects={"bare_cr_in_header", "nul_in_header"}
    ),
    "608": Expect(
        "Hello X-Keepdesk-Priority: urgent injected body",
        ("alice@example.com", False),
        check=_flattened_from,
    ),
    "610": Expect(text="HTML without MIME-Version.", check=_html_only),
    "701": Expect(attachments=["truncated.pdf"], check=_damaged("truncated.pdf")),
    "702": Expect(text="Invalid escapes: =ZZ =G1 =4 endLowercase hex: été"),
    "704": Expect(
        attachments=["big.pdf"],
        text="Text part is complete.",
        defects={"close_boundary_not_found"},
        check=_damaged("big.pdf"),
    ),
    "705": Expect(defects={"duplicate_boundary_parameter"}),
    "707": Expect(text="x-uuencode but this is plain text", check=_valid_types),
    "709": Expect("Signed message", ALICE, ["extra.asc", "smime.p7s"], text="Signed body"),
    "710": Expect(attachments=["inline.png"], check=_both_paragraphs),
}


def _corpus_files() -> list[object]:
    if not CORPUS.is_dir():
        reason = f"the shared corpus is not at {CORPUS.resolve()}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(path, id=path.stem) for path in sorted(CORPUS.glob("*.eml"))]


def _check_invariants(mail: ParsedMail) -> None:
    for text in (mail.subject, mail.sender.display_name):
        assert not any(c in text for c in "\r\n\x00")
    assert "\x00" not in mail.text_body and "\x00" not in (mail.html_body or "")
    for attachment in mail.attachments:
        assert 1 <= len(attachment.filename.encode()) <= 255
        assert not set("/\\\x00") & set(attachment.filename)
        assert attachment.filename == unicodedata.normalize("NFC", attachment.filename)
        assert attachment.size == len(attachment.data)
    if mail.automation.is_automated:
        assert not mail.automation.may_auto_reply


@pytest.mark.parametrize("path", _corpus_files())
def test_corpus_mail_parses_as_the_manifest_expects(path: Path) -> None:
    number = path.name[:3]
    result = parse_mail(path.read_bytes(), limits=MailLimits(), own_addresses=OURS)
    if number in REJECTED:
        assert isinstance(result, Rejected)
        assert result.reason == REJECTED[number]
        return
    assert isinstance(result, ParsedMail), result
    _check_invariants(result)
    expect = EXPECTATIONS.get(number, Expect())
    if expect.subject is not None:
        assert result.subject == expect.subject
    if expect.sender is not None:
        assert (result.sender.address, result.sender.is_verified) == expect.sender
    if expect.attachments is not None:
        assert [a.filename for a in result.attachments] == expect.attachments
    assert {str(reason) for reason in result.automation.reasons} == expect.reasons
    if expect.text is not None:
        assert expect.text in result.text_body
    assert expect.defects <= set(result.defects)
    if expect.check is not None:
        expect.check(result)


def test_no_corpus_mail_is_ever_attributed_to_alice_when_alice_did_not_send_it() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS.resolve()}")
    for number in ("314", "315", "320"):
        [path] = CORPUS.glob(f"{number}-*.eml")
        result = parse_mail(path.read_bytes(), limits=MailLimits())
        assert isinstance(result, ParsedMail)
        assert result.sender.address != "alice@example.com"
        assert not result.sender.is_verified


def test_a_pdf_attachment_keeps_the_exact_bytes_of_the_decoded_part() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS.resolve()}")
    [path] = CORPUS.glob("007-*.eml")
    raw = path.read_bytes()
    stdlib = email.message_from_bytes(raw, policy=email.policy.default)
    [part] = [p for p in stdlib.walk() if p.get_filename() == "contract.pdf"]
    expected = part.get_payload(decode=True)
    assert isinstance(expected, bytes)
    result = parse_mail(raw, limits=MailLimits())
    assert isinstance(result, ParsedMail)
    [pdf] = result.attachments
    assert hashlib.sha256(pdf.data).digest() == hashlib.sha256(expected).digest()


# The small corpus mails make the best seeds for mutation: every one already stresses a parser.
SEEDS = (
    sorted(p for p in CORPUS.glob("*.eml") if p.stat().st_size < 20_000) if CORPUS.is_dir() else []
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_corpus_mail_never_makes_parse_mail_raise(data: st.DataObject) -> None:
    if not SEEDS:
        pytest.skip(f"the shared corpus is not at {CORPUS.resolve()}")
    raw = bytearray(data.draw(st.sampled_from(SEEDS)).read_bytes())
    for _ in range(data.draw(st.integers(1, 16))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    lines = bytes(raw).splitlines(keepends=True)
    if data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(lines) - 1))
        lines.insert(index, lines[index] * data.draw(st.integers(1, 3)))
    result = parse_mail(b"".join(lines), limits=MailLimits(), own_addresses=OURS)
    assert isinstance(result, ParsedMail | Rejected)
    if isinstance(result, ParsedMail):
        _check_invariants(result)
