"""Turning part payloads into bytes and text: lenient transfer decoding, RFC 3676 format=flowed,
and a plain-text rendering of HTML that also collects the `cid:` references it makes.

Nothing here raises on bad input: damage is reported as defect codes next to the best result.
"""

import binascii
import html as html_module
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser

from keepdesk.mail.headers import first_raw, to_bytes

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_BAD_QP_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|\r|$)")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
# Feed the HTML parser in slices so the CPU guard gets a say between them.
_HTML_CHUNK = 64 * 1024
# html.parser is slow (about 1 s per MiB) and goes quadratic on an unclosed tag, so the text
# rendering reads only this much HTML; the HTML itself is kept whole.
MAX_RENDERED_HTML = 512 * 1024
_CID_URL = re.compile(r"(?i)cid:([^\s\"'>]+)")


def decode_base64(data: bytes) -> tuple[bytes, list[str]]:
    """Base64 that survives junk characters, misplaced padding and truncation (corpus 701)."""
    defects: list[str] = []
    stripped = data.translate(None, b" \t\r\n")
    if _NOT_BASE64.search(stripped):
        defects.append("base64_invalid_characters")
        stripped = _NOT_BASE64.sub(b"", stripped)
    unpadded = stripped.replace(b"=", b"")
    if len(unpadded) != len(stripped.rstrip(b"=")) or len(stripped) % 4:
        defects.append("base64_bad_padding")
    if len(unpadded) % 4 == 1:
        defects.append("base64_truncated")
        unpadded = unpadded[:-1]
    try:
        return binascii.a2b_base64(unpadded + b"=" * (-len(unpadded) % 4)), defects
    except binascii.Error:  # pragma: no cover - the input is clean by now
        return b"", [*defects, "base64_undecodable"]


def decode_quoted_printable(data: bytes) -> tuple[bytes, list[str]]:
    """Quoted-printable where invalid escapes stay literal and lowercase hex decodes (702)."""
    defects = ["quoted_printable_invalid_escape"] if _BAD_QP_ESCAPE.search(data) else []
    return binascii.a2b_qp(data), defects


def raw_payload(part: Message) -> object:
    """The payload as the parser stored it: a list of parts, or the body as surrogate-escaped text.

    `get_payload()` would re-decode 8-bit text as ASCII with "replace" (losing raw UTF-8, corpus
    207) after parsing Content-Transfer-Encoding with the stdlib's raising header classes.
    """
    return getattr(part, "_payload", None)


def child_parts(part: Message) -> list[Message] | None:
    """The sub-parts of a multipart or message/* part, or None for a leaf."""
    payload = raw_payload(part)
    if not isinstance(payload, list):
        return None
    return [child for child in payload if isinstance(child, Message)]


def payload_bytes(part: Message) -> tuple[bytes, list[str]]:
    """The decoded body bytes of a leaf part, and what was wrong with its transfer encoding.

    An unknown Content-Transfer-Encoding (`x-uuencode`, `gzip`; corpus 707) leaves the bytes as
    they came, with a defect, rather than guessing.
    """
    payload = raw_payload(part)
    if isinstance(payload, bytes):
        payload = payload.decode("ascii", "surrogateescape")
    if not isinstance(payload, str):
        return b"", ["payload_not_text"]
    data = to_bytes(payload)
    encoding = (first_raw(part, "content-transfer-encoding") or "").strip().lower()
    if encoding == "base64":
        return decode_base64(data)
    if encoding == "quoted-printable":
        return decode_quoted_printable(data)
    if encoding in _IDENTITY_ENCODINGS:
        return data, []
    return data, ["unknown_transfer_encoding"]


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def reflow_flowed(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of RFC 3676 format=flowed text (corpus 710)."""
    out: list[str] = []
    depth_of_paragraph = 0
    paragraph: list[str] = []

    def flush() -> None:
        prefix = ">" * depth_of_paragraph + (" " if depth_of_paragraph else "")
        out.append(prefix + "".join(paragraph))
        paragraph.clear()

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing (§4.4)
        if paragraph and depth != depth_of_paragraph:
            flush()  # a change of quote depth ends a paragraph (§4.5)
        depth_of_paragraph = depth
        is_soft = content.endswith(" ") and content != "-- "
        paragraph.append(content[:-1] if is_soft and delsp else content)
        if not is_soft:
            flush()
    if paragraph:
        flush()
    return "\n".join(out)


_SKIPPED = frozenset({"script", "style", "head", "title", "template", "noscript", "xmp"})
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip
_CID_ATTRIBUTES = frozenset({"src", "href", "background", "poster", "data"})


def _cid_key(value: str) -> str | None:
    """The opaque key of a `cid:` URL or a Content-ID: unquoted, without `<>`, quotes or spaces."""
    text = urllib.parse.unquote(value.strip())
    text = re.sub(r"[<>\"'\\\s\x00-\x1f\x7f]", "", text)
    return text[:250] or None


def content_id_key(value: str | None) -> str | None:
    return None if value is None else _cid_key(value)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.cids: set[str] = set()
        self.skip_depth = 0
        self.link: str | None = None
        self.link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in _CID_ATTRIBUTES and value and value.strip()[:4].lower() == "cid:":
                key = _cid_key(value.strip()[4:])
                if key:
                    self.cids.add(key)
        if tag in _SKIPPED:
            self.skip_depth += 1
        elif tag == "br":
            self.pieces.append("\n")
        elif tag in _BLOCKS:
            self.pieces.append("\n\n")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.link = href if href.lower().startswith(("http://", "https://")) else None
            self.link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCKS:
            self.pieces.append("\n\n")
        elif tag == "a" and self.link is not None:
            # Show where a link really goes (the deceptive `user@host` link of corpus 501).
            if "".join(self.link_text).strip() != self.link:
                self.pieces.append(f" <{self.link}>")
            self.link = None

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        self.pieces.append(data)
        if self.link is not None:
            self.link_text.append(data)


@dataclass(slots=True)
class HtmlText:
    text: str
    cids: set[str] = field(default_factory=set)
    is_truncated: bool = False


def cid_references(html: str) -> set[str]:
    """The `cid:` keys anywhere in HTML, read with a plain scan: no parser, no size limit."""
    keys = (_cid_key(html_module.unescape(m.group(1))) for m in _CID_URL.finditer(html))
    return {key for key in keys if key}


def html_to_text(html: str, *, tick: Callable[[], None] | None = None) -> HtmlText:
    """Readable plain text from HTML (scripts and styles dropped), and the `cid:` keys it uses.

    Only the first MAX_RENDERED_HTML characters are rendered. `tick` is called between slices of
    input, so a caller can stop a runaway parse.
    """
    extractor = _TextExtractor()
    rendered = html[:MAX_RENDERED_HTML]
    for start in range(0, len(rendered), _HTML_CHUNK):
        if tick is not None:
            tick()
        extractor.feed(rendered[start : start + _HTML_CHUNK])
    extractor.close()
    raw = "".join(extractor.pieces).replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in raw.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    cids = extractor.cids | cid_references(html[MAX_RENDERED_HTML:])
    return HtmlText(text, cids, is_truncated=len(html) > MAX_RENDERED_HTML)
