"""Header fields read from the raw values the parser stored, and decoded by us.

The stdlib's structured headers raise on hostile input (corpus 608) and decode charsets with
Python's codecs (202), so we read `raw_items()` and decode RFC 2047 encoded-words, RFC 2045/2231
parameters and message-id lists here, with the WHATWG charset table and without exceptions.
"""

import binascii
import re
import urllib.parse
from dataclasses import dataclass
from email.message import Message

from keepdesk.mail.charsets import decode_text

_FOLD = re.compile(r"\r\n(?=[ \t])|\r(?=[ \t])|\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
_MSG_ID = re.compile(r"<([^<>\s]{1,900})>")
_BARE_MSG_ID = re.compile(r"[^<>\s\"(),;:\\\[\]]{1,900}@[^<>\s\"(),;:\\\[\]]{1,255}")
_RFC2231_NAME = re.compile(r"^(.+?)\*(?:(\d{1,3})\*?)?$")

# Threading only needs the root and the latest ids; a hostile References list must stay bounded.
MAX_REFERENCES = 100


def to_bytes(value: str) -> bytes:
    """The bytes behind a parsed header or payload string (8-bit bytes arrive surrogate-escaped)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def raw_values(msg: Message, name: str) -> list[str]:
    """Every value of a header field as it appeared on the wire, unfolded, in order."""
    wanted = name.lower()
    return [_FOLD.sub("", value) for key, value in msg.raw_items() if key.lower() == wanted]


def first_raw(msg: Message, name: str) -> str | None:
    values = raw_values(msg, name)
    return values[0] if values else None


def clean_text(value: str) -> str:
    """One line of text: line breaks and tabs become a space; NUL and other controls go (AC-16)."""
    value = _LINE_BREAKS.sub(" ", value).replace("\t", " ")
    return _CONTROLS.sub("", value).strip()


def _decode_q(text: str) -> bytes:
    data = to_bytes(text.replace("_", " "))
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def _decode_b(text: str) -> bytes | None:
    data = _NOT_BASE64.sub(b"", to_bytes(text))
    if len(data) % 4 == 1:
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return None


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words anywhere in a value, the way mail clients do.

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2, corpus 210); adjacent words
    in one charset are joined before decoding, so a character split across two words survives.
    Text outside encoded-words is raw 8-bit (RFC 6532, corpus 207): UTF-8, else windows-1252.
    """
    if "=?" not in value and value.isascii():
        return value
    pieces: list[tuple[str | None, bytes]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        after_word = bool(pieces) and pieces[-1][0] is not None
        if between and not (after_word and between.isspace()):
            pieces.append((None, to_bytes(between)))
        charset = match.group(1).split("*", 1)[0].lower()
        encoding = match.group(2).lower()
        data = _decode_q(match.group(3)) if encoding == "q" else _decode_b(match.group(3))
        if data is None:
            pieces.append((None, to_bytes(match.group(0))))
        elif pieces and pieces[-1][0] == charset:
            pieces[-1] = (charset, pieces[-1][1] + data)
        else:
            pieces.append((charset, data))
        pos = match.end()
    if pos < len(value):
        pieces.append((None, to_bytes(value[pos:])))
    return "".join(decode_text(data, charset)[0] for charset, data in pieces)


def header_text(msg: Message, name: str) -> str | None:
    """The first value of a field as display text: decoded, one line, without controls."""
    value = first_raw(msg, name)
    return None if value is None else clean_text(decode_words(value))


@dataclass(frozen=True, slots=True)
class ContentHeader:
    """A parsed Content-Type or Content-Disposition: its main value and its parameters."""

    value: str
    params: dict[str, str]
    duplicates: frozenset[str]


def _split_params(value: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append(value[start:index])
            start = index + 1
    pieces.append(value[start:])
    return pieces


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        # Like the stdlib: only \\ and \" are escapes, so a Windows path keeps its single
        # backslashes and still splits into a basename later (corpus 103).
        return value[1:-1].replace("\\\\", "\\").replace('\\"', '"')
    return value.strip('"')


def _plain(value: str) -> str:
    return value if value.isascii() else decode_text(to_bytes(value), None)[0]


def _join_rfc2231(sections: dict[int, tuple[bool, str]]) -> str:
    charset: str | None = None
    data = bytearray()
    for number in sorted(sections):
        extended, value = sections[number]
        if extended:
            if number == 0 and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            data += urllib.parse.unquote_to_bytes(to_bytes(value))
        else:
            data += to_bytes(value)
    return decode_text(bytes(data), charset or None)[0]


def parse_content_header(value: str | None) -> ContentHeader:
    """Split `type/subtype; name=value; ...` with RFC 2231 continuations and charsets.

    The first occurrence of a parameter wins, as in the stdlib; repeated ones are reported in
    `duplicates` (corpus 705 repeats `boundary`, 209 repeats `charset`). An RFC 2231 form such as
    `filename*=` wins over the plain form (RFC 6266 §4.3).
    """
    if value is None:
        return ContentHeader("", {}, frozenset())
    pieces = _split_params(_FOLD.sub("", value))
    main = pieces[0].strip().lower()
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[bool, str]]] = {}
    duplicates: set[str] = set()
    for piece in pieces[1:]:
        name, equals, raw = piece.partition("=")
        name = name.strip().lower()
        if not equals or not name:
            continue
        raw = _unquote(raw.strip())
        match = _RFC2231_NAME.match(name)
        if match is None:
            if name in plain:
                duplicates.add(name)
            else:
                plain[name] = _plain(raw)
            continue
        base, number = match.group(1), match.group(2)
        is_extended = number is None or name.endswith("*")
        sections = extended.setdefault(base, {})
        index = int(number) if number is not None else 0
        if index in sections:
            duplicates.add(base)
        else:
            sections[index] = (is_extended, raw)
    params = dict(plain)
    for base, sections in extended.items():
        params[base] = _join_rfc2231(sections)
    return ContentHeader(main, params, frozenset(duplicates))


def _clean_id(value: str) -> str | None:
    value = _CONTROLS.sub("", value)
    return f"<{value}>" if value else None


def message_id(value: str | None) -> str | None:
    """The normalised `<id>` of a Message-ID field, or None when there is none to be found."""
    if value is None:
        return None
    match = _MSG_ID.search(value)
    if match is not None:
        return _clean_id(match.group(1))
    bare = _BARE_MSG_ID.fullmatch(value.strip())
    return _clean_id(bare.group(0)) if bare is not None else None


def message_ids(values: list[str]) -> list[str]:
    """The `<id>`s of In-Reply-To or References fields, in order, without repeats, bounded."""
    seen: dict[str, None] = {}
    for value in values:
        for match in _MSG_ID.finditer(value):
            cleaned = _clean_id(match.group(1))
            if cleaned is not None:
                seen.setdefault(cleaned, None)
    ids = list(seen)
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return ids
