"""`parse_mail`: raw RFC 5322 bytes in, a complete `ParsedMail` or a `Rejected` reason out.

Limits are checked on the raw bytes first (AC-7); then the stdlib parses and our own walker reads
the tree under a CPU-time budget, decoding headers, parameters, charsets and transfer encodings
itself instead of calling the stdlib accessors that raise on hostile mail (RELIABILITY §8).
"""

import email
import email.policy
import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message

from keepdesk.mail.addresses import (
    Mailbox,
    Recipients,
    Sender,
    parse_recipients,
    parse_reply_to,
    parse_sender,
)
from keepdesk.mail.bodies import (
    MAX_RENDERED_HTML,
    child_parts,
    cid_references,
    content_id_key,
    html_to_text,
    normalize_newlines,
    payload_bytes,
    raw_payload,
    reflow_flowed,
)
from keepdesk.mail.charsets import decode_text
from keepdesk.mail.headers import (
    ContentHeader,
    clean_text,
    decode_words,
    first_raw,
    header_text,
    message_id,
    message_ids,
    parse_content_header,
    raw_values,
    to_bytes,
)
from keepdesk.mail.limits import MailLimits, check_limits
from keepdesk.mail.loops import Automation, classify_automation
from keepdesk.tickets.filenames import safe_filename

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_BARE_CR = re.compile(rb"\r(?!\n)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_TAGS = re.compile(r"<[^>]*>")
# Controls other than tab and newline: broken base64 turns into these (corpus 701).
_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BODY_TYPES = frozenset({"text/plain", "text/html"})
# A short extension for parts that arrive without a name, so a download opens sensibly.
_EXTENSIONS = {
    "text/calendar": ".ics",
    "text/plain": ".txt",
    "text/html": ".html",
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
}
# Original names are kept as metadata only; this bounds what lands in the database (corpus 106).
MAX_ORIGINAL_FILENAME = 1024


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    """One attachment or inline resource, decoded. `filename` is the safe name (AC-19)."""

    filename: str
    original_filename: str | None
    content_type: str
    data: bytes
    size: int
    content_id: str | None
    is_inline: bool
    defects: list[str] = field(default_factory=list)

    @property
    def is_possibly_damaged(self) -> bool:
        """Its transfer encoding was broken or cut off (corpus 701, 704)."""
        return bool(self.defects)


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """Everything keepdesk reads from one message. Text is NUL-free; headers are single lines."""

    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    subject: str
    sender: Sender
    reply_to: list[Mailbox]
    recipients: Recipients
    date: datetime | None
    text_body: str
    html_body: str | None
    attachments: list[ParsedAttachment]
    automation: Automation
    defects: list[str]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message cannot be ingested: a short code for the quarantine and a readable sentence.

    Codes: too_large, too_many_headers, header_too_long, too_deep, too_many_parts, cpu_time,
    parse_error, and parser_crashed (the parser's process died on it: `parsers`).
    """

    reason: str
    detail: str


class _Stop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejected = Rejected(reason, detail)


@dataclass(slots=True)
class _Candidate:
    original_filename: str | None
    fallback_name: str | None
    content_type: str
    data: bytes
    content_id: str | None
    disposition: str
    defects: list[str]


def _defect_code(defect: object) -> str:
    return _CAMEL.sub("_", type(defect).__name__.removesuffix("Defect")).lower()


def _media_type(header: ContentHeader) -> str | None:
    return header.value if _MEDIA_TYPE.fullmatch(header.value) else None


def _default_type(part: Message) -> str:
    """The type of a part without Content-Type: text/plain, message/rfc822 in a digest."""
    try:
        return part.get_default_type()
    except Exception:
        return "text/plain"


def _parsed_type(part: Message) -> str:
    """The type the stdlib built the part as, when its Content-Type is no valid type of ours."""
    try:
        return part.get_content_type()
    except Exception:
        return "multipart/mixed"


class _Walker:
    """Reads the parsed tree in document order into bodies and attachment candidates."""

    def __init__(self, limits: MailLimits, tick: Callable[[], None]) -> None:
        self.limits = limits
        self.tick = tick
        self.parts = 0
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.candidates: list[_Candidate] = []
        self.defects: list[str] = []

    def note(self, number: int, code: str) -> None:
        self.defects.append(code if number == 0 else f"part {number}: {code}")

    def enter(self, part: Message, depth: int) -> int:
        self.tick()
        number = self.parts
        self.parts += 1
        # check_limits already held the raw bytes to these; this re-check guards the parse itself.
        if self.parts > self.limits.max_parts:
            raise _Stop("too_many_parts", f"More than {self.limits.max_parts} MIME parts.")
        if depth > self.limits.max_depth:
            raise _Stop("too_deep", f"MIME nesting deeper than {self.limits.max_depth} levels.")
        for defect in getattr(part, "defects", []):
            self.note(number, _defect_code(defect))
        return number

    def walk(self, part: Message, depth: int, *, as_attachment: bool = False) -> None:
        number = self.enter(part, depth)
        content_type = parse_content_header(first_raw(part, "content-type"))
        for name in sorted(content_type.duplicates):
            self.note(number, f"duplicate_{name}_parameter")  # corpus 705 (boundary), 209
        children = child_parts(part)
        declared = _media_type(content_type)
        if children is not None:
            structure = declared or _parsed_type(part)
            maintype, _, subtype = structure.partition("/")
            if maintype == "message":
                self.add_message(part, structure, children, content_type)
            elif not children:
                return
            elif subtype == "alternative":
                self.walk_alternative(children, depth + 1, as_attachment=as_attachment)
            elif subtype == "signed":
                # The signed content is the first part; the signature is an attachment (709).
                self.walk(children[0], depth + 1, as_attachment=as_attachment)
                for child in children[1:]:
                    self.walk(child, depth + 1, as_attachment=True)
            elif subtype == "encrypted":
                for child in children:
                    self.walk(child, depth + 1, as_attachment=True)
            else:
                for child in children:
                    self.walk(child, depth + 1, as_attachment=as_attachment)
            return
        self.leaf(part, number, content_type, declared, as_attachment=as_attachment)

    def walk_alternative(self, children: list[Message], depth: int, *, as_attachment: bool) -> None:
        """Keep the first plain and the first HTML version; other leaves, such as a calendar
        invitation, become attachments (corpus 113)."""
        seen: set[str] = set()
        for child in children:
            declared = parse_content_header(first_raw(child, "content-type")).value
            kind = declared if declared in _BODY_TYPES else None
            if kind is not None and child_parts(child) is None:
                if kind in seen:
                    self.enter(child, depth)
                    continue
                seen.add(kind)
            self.walk(child, depth, as_attachment=as_attachment)

    def leaf(
        self,
        part: Message,
        number: int,
        content_type: ContentHeader,
        declared: str | None,
        *,
        as_attachment: bool,
    ) -> None:
        disposition = parse_content_header(first_raw(part, "content-disposition"))
        if content_type.value:
            media = declared or "application/octet-stream"
        else:
            media = _default_type(part)
        data, defects = payload_bytes(part)
        for code in defects:
            self.note(number, code)
        is_body = (
            media in _BODY_TYPES
            and not as_attachment
            and disposition.value != "attachment"
            and "filename" not in disposition.params
        )
        if is_body:
            text = decode_text(data, content_type.params.get("charset"))[0]
            text = _BODY_CONTROLS.sub("", normalize_newlines(text))
            if media == "text/html":
                self.htmls.append(text)
                return
            if content_type.params.get("format", "").lower() == "flowed":
                delsp = content_type.params.get("delsp", "").lower() == "yes"
                text = reflow_flowed(text, delsp=delsp)
            self.texts.append(text)
            return
        name = disposition.params.get("filename") or content_type.params.get("name")
        if name is not None and "=?" in name:
            name = decode_words(name)  # RFC 2047 in a parameter: wrong, but common (102)
        self.candidates.append(
            _Candidate(
                original_filename=name,
                fallback_name=None,
                content_type=media,
                data=data,
                content_id=content_id_key(first_raw(part, "content-id")),
                disposition=disposition.value,
                defects=defects,
            )
        )

    def add_message(
        self, part: Message, media: str, children: list[Message], content_type: ContentHeader
    ) -> None:
        """A nested message becomes an `.eml` attachment; a delivery report a `.txt`."""
        data = b"\r\n".join(_serialise(child) for child in children)
        disposition = parse_content_header(first_raw(part, "content-disposition"))
        name = disposition.params.get("filename") or content_type.params.get("name")
        fallback = None
        if media != "message/delivery-status" and children:
            subject = header_text(children[0], "subject")
            fallback = f"{subject or 'message'}.eml"
        self.candidates.append(_Candidate(name, fallback, media, data, None, disposition.value, []))


def _serialise(msg: Message) -> bytes:
    """Bytes for a nested message. The outer raw message stays the byte-exact record (AC-9)."""
    try:
        policy = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)
        return msg.as_bytes(policy=policy)
    except Exception:
        # as_bytes() fails on some hostile input (corpus 211): rebuild from the raw pieces.
        head = b"".join(to_bytes(f"{name}: {value}\r\n") for name, value in msg.raw_items())
        payload = raw_payload(msg)
        body = to_bytes(payload) if isinstance(payload, str) else b""
        return head + b"\r\n" + body


def _finish_attachment(candidate: _Candidate, index: int, cids: set[str]) -> ParsedAttachment:
    original = candidate.original_filename
    if original is not None:
        original = original.replace("\x00", "")[:MAX_ORIGINAL_FILENAME] or None
    name = original or candidate.fallback_name
    filename = safe_filename(name, index)
    if name is None:
        filename += _EXTENSIONS.get(candidate.content_type, "")
    # Inline only when the HTML shows it and it is no download. SVG can carry script, so it is
    # never inline (corpus 109); inline parts nobody references stay attachments (710).
    is_inline = (
        candidate.content_id is not None
        and candidate.content_id in cids
        and candidate.disposition != "attachment"
        and candidate.content_type != "image/svg+xml"
    )
    return ParsedAttachment(
        filename=filename,
        original_filename=original,
        content_type=candidate.content_type,
        data=candidate.data,
        size=len(candidate.data),
        content_id=candidate.content_id,
        is_inline=is_inline,
        defects=candidate.defects,
    )


def _header_defects(raw: bytes) -> list[str]:
    """Bare CR and NUL in the header block: parsers split such headers differently (606)."""
    end = _HEADER_END.search(raw)
    head = raw[: end.start()] if end else raw
    defects = []
    if _BARE_CR.search(head):
        defects.append("bare_cr_in_header")
    if b"\x00" in head:
        defects.append("nul_in_header")
    return defects


def _date(msg: Message) -> datetime | None:
    value = first_raw(msg, "date")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(clean_text(value))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # "-0000": the zone is unknown (RFC 5322 §3.3)
        # Converting can leave datetime's range: "31 Dec 9999 23:59 -2359".
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _html_text(html: str, tick: Callable[[], None], defects: list[str]) -> tuple[str, set[str]]:
    try:
        rendered = html_to_text(html, tick=tick)
    except _Stop:
        raise
    except Exception:
        defects.append("html_unparseable")
        return " ".join(_TAGS.sub(" ", html[:MAX_RENDERED_HTML]).split()), cid_references(html)
    if rendered.is_truncated:
        defects.append("html_text_truncated")
    return rendered.text, rendered.cids


def _parse(
    raw: bytes,
    limits: MailLimits,
    own_addresses: set[str] | frozenset[str],
    cpu_clock: Callable[[], float],
) -> ParsedMail:
    deadline = cpu_clock() + limits.max_cpu_seconds

    def tick() -> None:
        if cpu_clock() > deadline:
            raise _Stop(
                "cpu_time", f"Parsing took more than {limits.max_cpu_seconds:g} s of CPU time."
            )

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    tick()
    walker = _Walker(limits, tick)
    walker.walk(msg, 0)
    defects = _header_defects(raw) + walker.defects
    html = "\n".join(walker.htmls) if walker.htmls else None
    html_text, cids = _html_text(html, tick, defects) if html is not None else ("", set())
    text = "\n\n".join(t.strip("\n") for t in walker.texts) if walker.texts else html_text
    attachments = [
        _finish_attachment(candidate, index, cids)
        for index, candidate in enumerate(walker.candidates, start=1)
    ]
    tick()
    return ParsedMail(
        message_id=message_id(first_raw(msg, "message-id")),
        in_reply_to=message_ids(raw_values(msg, "in-reply-to")),
        references=message_ids(raw_values(msg, "references")),
        subject=header_text(msg, "subject") or "",
        sender=parse_sender(msg),
        reply_to=parse_reply_to(msg),
        recipients=parse_recipients(msg),
        date=_date(msg),
        text_body=text.strip("\n"),
        html_body=html,
        attachments=attachments,
        automation=classify_automation(msg, own_addresses=own_addresses),
        defects=defects,
    )


def parse_mail(
    raw: bytes,
    *,
    limits: MailLimits,
    own_addresses: set[str] | frozenset[str] = frozenset(),
    cpu_clock: Callable[[], float] = time.thread_time,
) -> ParsedMail | Rejected:
    """Parse one raw message. Never raises (AC-6): every failure is a `Rejected` with a reason.

    `own_addresses` are our mailboxes, for loop detection (corpus 407). `cpu_clock` measures the
    CPU budget; tests may pass a fake one. It is the calling thread's CPU time, not the process's:
    the ingester parses in a worker thread, and other threads' work must not count against a mail.
    """
    try:
        violation = check_limits(raw, limits)
        if violation is not None:
            return Rejected(str(violation.reason), violation.detail)
        return _parse(raw, limits, own_addresses, cpu_clock)
    except _Stop as stop:
        return stop.rejected
    except RecursionError:
        # Not an email.errors exception; deep nesting that slipped past the raw scan (L04).
        return Rejected("too_deep", "The message is nested too deeply to parse.")
    except MemoryError:
        return Rejected("parse_error", "The message needed more memory than is available.")
    except Exception as exc:
        detail = clean_text(f"{type(exc).__name__}: {exc}")[:300]
        return Rejected("parse_error", f"The message could not be parsed ({detail}).")
