"""Who sent a message and to whom, read with our own strict RFC 5322 address parser.

`email.utils.getaddresses` before the CVE-2023-27043 fix (CPython 3.11.7 has none) turns
`alice@example.com)<mallory@example.net>` into extra addresses (corpus 320), so it is never used.
A requester is verified only when one From field holds one clean mailbox (AC-12); the outbound
helpers build header values that cannot carry CR or LF (AC-16).
"""

import base64
import re
from dataclasses import dataclass, field
from email.message import Message
from enum import Enum

from keepdesk.mail.headers import clean_text, decode_words, raw_values

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED_LOCAL = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?[^?]*\?=")
_ENCODED_WORD_AT = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_PHRASE_SAFE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_SPECIALS = frozenset('()<>[]:;@\\,."')
_OUTBOUND_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _Kind(Enum):
    ATOM = "atom"
    QUOTED = "quoted"
    ANGLE = "angle"
    SPECIAL = "special"
    DOMAIN_LITERAL = "domain-literal"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    spaced: bool  # whitespace or a comment came right before it


class _SyntaxProblem(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _read_delimited(value: str, start: int, close: str, code: str) -> int:
    """Index just past the closing character of a quoted string or a domain literal."""
    index = start + 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 2
            continue
        if char == close:
            return index + 1
        index += 1
    raise _SyntaxProblem(code)


def _skip_comment(value: str, start: int) -> int:
    depth = 0
    index = start
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise _SyntaxProblem("unterminated_comment")


def _read_angle(value: str, start: int) -> int:
    index = start + 1
    while index < len(value):
        char = value[index]
        if char == '"':
            index = _read_delimited(value, index, '"', "unterminated_quote")
            continue
        if char == "<":
            raise _SyntaxProblem("nested_angle_brackets")
        if char == ">":
            return index + 1
        index += 1
    raise _SyntaxProblem("unterminated_angle_address")


def _tokenize(value: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    spaced = False
    while index < len(value):
        char = value[index]
        if char in " \t":
            spaced = True
            index += 1
            continue
        if ord(char) < 0x20 or char == "\x7f":
            raise _SyntaxProblem("control_characters")
        if char == "(":
            index = _skip_comment(value, index)
            spaced = True
            continue
        if char == ")":
            raise _SyntaxProblem("unbalanced_parenthesis")
        if char == ">":
            raise _SyntaxProblem("unbalanced_angle_bracket")
        if char == "\\":
            raise _SyntaxProblem("stray_backslash")
        if char == '"':
            end = _read_delimited(value, index, '"', "unterminated_quote")
            tokens.append(_Token(_Kind.QUOTED, value[index:end], spaced))
        elif char == "<":
            end = _read_angle(value, index)
            tokens.append(_Token(_Kind.ANGLE, value[index + 1 : end - 1], spaced))
        elif char == "[":
            end = _read_delimited(value, index, "]", "unterminated_domain_literal")
            tokens.append(_Token(_Kind.DOMAIN_LITERAL, value[index:end], spaced))
        elif char in _SPECIALS:
            end = index + 1
            tokens.append(_Token(_Kind.SPECIAL, char, spaced))
        else:
            # An encoded-word is one atom even when it hides specials (corpus 608): the Q
            # encoding may carry ":" or "@", which must not split the display name.
            word = _ENCODED_WORD_AT.match(value, index)
            end = word.end() if word is not None else index + 1
            while end < len(value) and value[end] not in _SPECIALS and value[end] not in " \t":
                if ord(value[end]) < 0x20 or value[end] == "\x7f":
                    break
                end += 1
            tokens.append(_Token(_Kind.ATOM, value[index:end], spaced))
        index = end
        spaced = False
    return tokens


def is_valid_addr_spec(address: str) -> bool:
    """A strict `local@domain`: dot-atom or quoted local part, a dotted hostname, ASCII only.

    No encoded-words (RFC 2047 §5; corpus 314), no controls, no domain literals, RFC 5321 lengths.
    """
    if not address.isascii() or len(address) > 254 or _ENCODED_WORD.search(address):
        return False
    local, at, domain = address.rpartition("@")
    if not at or not local or len(local) > 64:
        return False
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED_LOCAL.fullmatch(local)):
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox of an address list: a lower-cased addr-spec and a display name."""

    address: str
    display_name: str


@dataclass(frozen=True, slots=True)
class AddressList:
    """The valid mailboxes of a field, and what was wrong with the rest."""

    mailboxes: list[Mailbox] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _phrase(tokens: list[_Token]) -> str:
    words: list[str] = []
    for token in tokens:
        if token.kind is _Kind.QUOTED:
            text = token.text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        else:
            text = token.text
        if words and (token.spaced or token.kind is not _Kind.SPECIAL):
            words.append(" ")
        words.append(text)
    return "".join(words)


def _display_name(tokens: list[_Token], problems: list[str]) -> str:
    decoded = decode_words(_phrase(tokens))
    cleaned = clean_text(decoded)
    if cleaned != decoded.strip():
        # Encoded-words that decode to CR/LF are a header-injection attempt (corpus 608).
        problems.append("control_characters_in_display_name")
    return cleaned


def _mailbox(tokens: list[_Token], problems: list[str]) -> Mailbox | None:
    angles = [i for i, token in enumerate(tokens) if token.kind is _Kind.ANGLE]
    if len(angles) > 1:
        problems.append("ambiguous_address")
        return None
    if angles:
        at = angles[0]
        phrase, after = tokens[:at], tokens[at + 1 :]
        if after:
            problems.append("ambiguous_address")
            return None
        if any(t.kind not in (_Kind.ATOM, _Kind.QUOTED) and t.text != "." for t in phrase):
            # `alice@example.com <mallory@example.net>`: which address did the sender mean?
            problems.append("ambiguous_address")
            return None
        spec = tokens[at].text.strip()
        name = _display_name(phrase, problems)
    else:
        if any(t.spaced for t in tokens[1:]):
            problems.append("invalid_address")
            return None
        spec = "".join(t.text for t in tokens)
        name = ""
    if _ENCODED_WORD.search(spec):
        problems.append("encoded_word_in_address")
        return None
    if not spec:
        problems.append("empty_address")
        return None
    if not is_valid_addr_spec(spec):
        problems.append("invalid_address")
        return None
    return Mailbox(spec.lower(), name)


def _split_top_level(
    tokens: list[_Token], allow_groups: bool, problems: list[str]
) -> list[list[_Token]]:
    groups: list[list[_Token]] = [[]]
    in_group = False
    for token in tokens:
        if token.kind is _Kind.SPECIAL and token.text == ",":
            groups.append([])
        elif token.kind is _Kind.SPECIAL and token.text == ":" and not in_group:
            if not allow_groups:
                raise _SyntaxProblem("group_syntax")
            in_group = True
            groups[-1] = []  # The group's name is not a mailbox.
        elif token.kind is _Kind.SPECIAL and token.text == ";" and in_group:
            in_group = False
            groups.append([])
        else:
            groups[-1].append(token)
    if in_group:
        problems.append("unterminated_group")
    return [group for group in groups if group]


def parse_address_list(value: str, *, allow_groups: bool = True) -> AddressList:
    """Parse one raw (unfolded) address field; a syntax error drops the whole field.

    Dropping rather than guessing is the point: two parsers that disagree about a malformed
    field are how a mail is attributed to the wrong person (corpus 320).
    """
    problems: list[str] = []
    try:
        tokens = _tokenize(value)
        chunks = _split_top_level(tokens, allow_groups, problems)
    except _SyntaxProblem as problem:
        return AddressList([], [problem.code])
    mailboxes = [mailbox for chunk in chunks if (mailbox := _mailbox(chunk, problems))]
    return AddressList(mailboxes, problems)


@dataclass(frozen=True, slots=True)
class Sender:
    """The requester as the From field states it, and whether that statement is unambiguous."""

    address: str | None
    display_name: str
    is_verified: bool
    problems: list[str] = field(default_factory=list)


def parse_sender(msg: Message) -> Sender:
    """The From mailbox. `address` is set when the first From field starts with a valid mailbox;
    `is_verified` only when there is nothing at all to object to (AC-12).

    Verified does not mean authenticated: DMARC is judged elsewhere (AC-11).
    """
    values = raw_values(msg, "from")
    if not values:
        return Sender(None, "", is_verified=False, problems=["no_from"])
    problems: list[str] = []
    if len(values) > 1:
        problems.append("multiple_from")  # RFC 5322 §3.6: exactly one (corpus 315).
    value = values[0]
    if "\x00" in value or "\r" in value or "\n" in value:
        problems.append("control_characters")
    parsed = parse_address_list(value, allow_groups=False)
    problems.extend(parsed.problems)
    if not parsed.mailboxes:
        if not parsed.problems:
            problems.append("empty_from")
        return Sender(None, "", is_verified=False, problems=problems)
    if len(parsed.mailboxes) > 1:
        problems.append("multiple_mailboxes")
    first = parsed.mailboxes[0]
    return Sender(first.address, first.display_name, not problems, problems)


def parse_reply_to(msg: Message) -> list[Mailbox]:
    """The valid mailboxes of every Reply-To field (corpus 312), in order, without repeats."""
    return _unique(raw_values(msg, "reply-to"))


def _unique(values: list[str]) -> list[Mailbox]:
    seen: dict[str, Mailbox] = {}
    for value in values:
        for mailbox in parse_address_list(value).mailboxes:
            seen.setdefault(mailbox.address, mailbox)
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class Recipients:
    """Addresses the message was sent to, per field, each lower-cased and syntactically valid."""

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    delivered_to: list[str] = field(default_factory=list)
    x_original_to: list[str] = field(default_factory=list)

    @property
    def all_addresses(self) -> list[str]:
        """Every address once. Our mailbox may appear only in Delivered-To (Bcc; corpus 321)."""
        fields = (self.to, self.cc, self.bcc, self.delivered_to, self.x_original_to)
        return list(dict.fromkeys(address for addresses in fields for address in addresses))


def parse_recipients(msg: Message) -> Recipients:
    def addresses(name: str) -> list[str]:
        return [mailbox.address for mailbox in _unique(raw_values(msg, name))]

    return Recipients(
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        delivered_to=addresses("delivered-to"),
        x_original_to=addresses("x-original-to"),
    )


def sanitize_header_value(value: str) -> str:
    """Make any text safe to place in an outbound header: no CR, LF, NUL or other controls.

    Line breaks (including Unicode ones) become one space so that "Re: " + a hostile subject
    stays one header line (AC-16, corpus 608).
    """
    return " ".join(_OUTBOUND_CONTROLS.sub(" ", value).split())


def _encode_words(text: str) -> str:
    """RFC 2047 B-encoded words of at most 75 characters, never splitting a character."""
    words: list[str] = []
    chunk = ""
    for char in text:
        candidate = chunk + char
        if len(base64.b64encode(candidate.encode())) + len("=?utf-8?b??=") > 75:
            words.append(chunk)
            chunk = char
        else:
            chunk = candidate
    if chunk:
        words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode('ascii')}?=" for w in words)


def format_address(name: str, address: str) -> str:
    """An outbound `Name <addr>` value. Refuses CR, LF or NUL anywhere and an invalid address."""
    for text in (name, address):
        if any(char in text for char in "\r\n\x00"):
            raise ValueError("An address header may not contain CR, LF or NUL.")
    if not is_valid_addr_spec(address):
        raise ValueError("Not a valid e-mail address.")
    name = sanitize_header_value(name)
    if not name:
        return address
    if not name.isascii():
        phrase = _encode_words(name)
    elif _PHRASE_SAFE.fullmatch(name) and "=?" not in name:
        phrase = name
    else:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        phrase = f'"{escaped}"'
    return f"{phrase} <{address}>"
