"""Hard limits on one inbound message, and a scan of its raw bytes that enforces them pre-parse.

The scan mirrors how the stdlib's feed parser splits lines, headers and MIME boundaries, but only
counts: it builds no objects, so a header flood or a MIME bomb costs one pass over the bytes (AC-7).
"""

import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MailLimits:
    """Per-message caps (AC-7 defaults). Exceeding any of them quarantines the message."""

    max_bytes: int = 25 * _MIB
    max_headers: int = 1000
    max_header_bytes: int = 64 * 1024
    max_depth: int = 50
    max_parts: int = 1000
    max_cpu_seconds: float = 30.0


class LimitReason(StrEnum):
    TOO_LARGE = "too_large"
    TOO_MANY_HEADERS = "too_many_headers"
    HEADER_TOO_LONG = "header_too_long"
    TOO_DEEP = "too_deep"
    TOO_MANY_PARTS = "too_many_parts"


@dataclass(frozen=True, slots=True)
class LimitViolation:
    reason: LimitReason
    detail: str


# Header lines (folded ones included) summed over every header block, the message's and each
# part's. Each block is also held to max_headers fields; this bounds the total, so 1 000 parts of
# 999 headers, or one field folded over a million lines, cannot materialise millions of header
# objects (compare corpus L02: 100 k headers cost ~440 MB).
_TOTAL_HEADERS_FACTOR = 10

# The stdlib's headerRE: a header line, a continuation line, or an mbox "From " line.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
_BOUNDARY_PARAM = re.compile(rb"""(?i)(?:^|;)\s*boundary(\*?)\s*=\s*(?:"([^"]*)"|([^\s;]+))""")
_RFC2231_PREFIX = re.compile(rb"^[^']*'[^']*'")
_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n)?")
_BLANK_LINE = re.compile(rb"\n(?=\n)")
_MAX_MISSES = 64


def _boundary(match: re.Match[bytes]) -> bytes:
    value = match.group(2) if match.group(2) is not None else match.group(3)
    if match.group(1):  # RFC 2231: boundary*=us-ascii''abc
        value = urllib.parse.unquote_to_bytes(_RFC2231_PREFIX.sub(b"", value))
    return value.rstrip()


class _Exceeded(Exception):
    def __init__(self, violation: LimitViolation) -> None:
        super().__init__(violation.detail)
        self.violation = violation


@dataclass(slots=True)
class _Level:
    """One open multipart container: the boundaries that end its parts, and its nesting depth."""

    boundaries: frozenset[bytes]
    depth: int
    is_digest: bool


@dataclass(slots=True)
class _Block:
    """What a header block says about the entity it starts."""

    media_type: bytes
    boundaries: frozenset[bytes]


class _Scanner:
    """Walks the raw bytes once with a cursor; lines are cut one at a time, never all at once
    (a list of every line of 25 MB of empty lines would itself cost 200 MB)."""

    def __init__(self, raw: bytes, limits: MailLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.pos = 0
        self.line_end = 0
        self.parts = 0
        self.header_lines = 0
        # Two searches for the open boundaries: a fast one that starts on the literal "--", and
        # one anchored to line starts for mail that hides "--boundary" inside lines.
        self.pattern: re.Pattern[bytes] | None = None
        self.anchored: re.Pattern[bytes] | None = None
        self.misses = 0
        self.stack: list[_Level] = []
        self.active: dict[bytes, int] = {}

    def fail(self, reason: LimitReason, detail: str) -> None:
        raise _Exceeded(LimitViolation(reason, detail))

    def peek(self) -> bytes | None:
        """The line at the cursor without its line break, or None at the end of the message."""
        if self.pos >= len(self.raw):
            return None
        # \r\n, a bare \r and a bare \n all end a line, exactly as in the feed parser (606).
        match = _LINE.match(self.raw, self.pos)
        assert match is not None  # the pattern matches at every position
        self.line_end = match.end()
        return match.group(1)

    def advance(self) -> None:
        self.pos = self.line_end

    def add_entity(self, depth: int) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            self.fail(
                LimitReason.TOO_MANY_PARTS,
                f"The message has more than {self.limits.max_parts} MIME parts.",
            )
        if depth > self.limits.max_depth:
            self.fail(
                LimitReason.TOO_DEEP,
                f"MIME parts are nested more than {self.limits.max_depth} levels deep.",
            )

    def boundary_level(self, line: bytes) -> tuple[int, bool] | None:
        """The stack index whose boundary this line is, and whether it closes that multipart."""
        if not self.active or not line.startswith(b"--"):
            return None
        rest = line[2:].rstrip(b" \t")
        level = self.active.get(rest)
        if level is not None:
            return level, False
        if rest.endswith(b"--"):
            level = self.active.get(rest[:-2])
            if level is not None:
                return level, True
        return None

    def read_headers(self) -> _Block:
        """Count a header block's fields; stops on the blank line after it, having consumed it."""
        limits = self.limits
        fields = 0
        field_bytes = 0
        content_type: list[bytes] = []
        in_content_type = False
        while (line := self.peek()) is not None:
            if not line:
                self.advance()
                break
            if self.boundary_level(line) is not None or not _HEADER_LINE.match(line):
                break  # The feed parser ends the block here; the line belongs to what follows.
            self.advance()
            self.header_lines += 1
            if self.header_lines > limits.max_headers * _TOTAL_HEADERS_FACTOR:
                self.fail(
                    LimitReason.TOO_MANY_HEADERS,
                    "The message's header blocks have more than "
                    f"{limits.max_headers * _TOTAL_HEADERS_FACTOR} lines in all.",
                )
            if line[0] in b" \t":
                field_bytes += len(line) + 2
                if in_content_type:
                    content_type.append(line)
            else:
                fields += 1
                field_bytes = len(line) + 2
                in_content_type = line[:13].lower() == b"content-type:"
                if in_content_type:
                    content_type.append(b";" + line[13:])
                if fields > limits.max_headers:
                    self.fail(
                        LimitReason.TOO_MANY_HEADERS,
                        f"A header block has more than {limits.max_headers} fields.",
                    )
            if field_bytes > limits.max_header_bytes:
                self.fail(
                    LimitReason.HEADER_TOO_LONG,
                    f"A header field is longer than {limits.max_header_bytes} bytes.",
                )
        value = b"".join(content_type)
        media = value[1:].split(b";", 1)[0].strip().lower() if value else b""
        # Every boundary= counts, not only the one the stdlib picks (corpus 705): over-counting
        # can only make the scan stricter than the parse it protects.
        boundaries = frozenset(_boundary(m) for m in _BOUNDARY_PARAM.finditer(value))
        return _Block(media, boundaries)

    def open_entity(self, depth: int, default_media: bytes) -> None:
        """Count one entity whose header block starts at the cursor, and what it opens."""
        self.add_entity(depth)
        block = self.read_headers()
        media = block.media_type or default_media
        if media.startswith(b"multipart/") and block.boundaries:
            index = len(self.stack)
            self.stack.append(_Level(block.boundaries, depth, media == b"multipart/digest"))
            for boundary in block.boundaries:
                self.active[boundary] = index
            self.activate()
        elif media == b"message/delivery-status":
            self.count_status_blocks(depth + 1)
        elif media.startswith(b"message/"):
            # message/rfc822 (and the feed parser treats every message/* alike): a whole message
            # follows, one level deeper.
            self.open_entity(depth + 1, b"text/plain")

    def count_status_blocks(self, depth: int) -> None:
        """The feed parser makes one object per block of a delivery report, and an empty block
        per extra blank line: count each as a part."""
        match = self.find_boundary()
        end = match.start() if match else len(self.raw)
        body = self.raw[self.pos : end].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self.add_entity(depth)
        for _blank_line in _BLANK_LINE.finditer(b"\n" + body):
            self.add_entity(depth)
        self.pos = end

    def find_boundary(self) -> re.Match[bytes] | None:
        """The next line from the cursor on that is an open multipart's boundary."""
        if self.pattern is None:
            return None
        raw = self.raw
        position = self.pos
        while self.misses < _MAX_MISSES:
            match = self.pattern.search(raw, position)
            if match is None:
                return None
            start = match.start()
            if start == 0 or raw[start - 1] in b"\r\n":
                return match
            self.misses += 1
            position = start + 1
        # Many "--boundary" strings inside lines: hostile, so let the engine check line starts.
        if self.anchored is None:
            self.anchored = re.compile(rb"(?m)(?:^|(?<=\r))" + self.pattern.pattern)
        return self.anchored.search(raw, position)

    def next_boundary(self) -> tuple[int, bool] | None:
        """Move past the next boundary line, skipping everything before it."""
        match = self.find_boundary()
        if match is None:
            self.pos = len(self.raw)
            return None
        self.pos = match.end()
        return self.active[match.group(1)], match.group(2) is not None

    def activate(self) -> None:
        """One regex for the boundaries now open, so bodies are skipped at C speed."""
        if not self.active:
            self.pattern = self.anchored = None
            return
        # Longest first, so a boundary that extends another is tried before it. The pattern
        # starts with a literal so the engine can skip ahead; find_boundary checks line starts.
        words = sorted(self.active, key=len, reverse=True)
        alternatives = b"|".join(re.escape(word) for word in words)
        delimiter = rb"--(" + alternatives + rb")(--)?[ \t]*(?:\r\n|\r|\n|\Z)"
        self.pattern = re.compile(delimiter)
        self.anchored = None  # compiled when first needed: a hostile mail only

    def pop_to(self, size: int) -> None:
        if len(self.stack) <= size:
            return
        while len(self.stack) > size:
            level = self.stack.pop()
            for boundary in level.boundaries:
                if self.active.get(boundary) == len(self.stack):
                    del self.active[boundary]
            # An inner level may have shadowed an outer level's boundary of the same text.
            for index, outer in enumerate(self.stack):
                for boundary in outer.boundaries & level.boundaries:
                    self.active[boundary] = index
        self.activate()

    def scan(self) -> None:
        self.open_entity(0, b"text/plain")
        while (found := self.next_boundary()) is not None:
            index, closes = found
            if closes:
                self.pop_to(index)
                continue
            self.pop_to(index + 1)
            level = self.stack[index]
            default = b"message/rfc822" if level.is_digest else b"text/plain"
            self.open_entity(level.depth + 1, default)


def check_limits(raw: bytes, limits: MailLimits) -> LimitViolation | None:
    """Find the first limit the raw message breaks, reading only its bytes, or None when it fits."""
    if len(raw) > limits.max_bytes:
        return LimitViolation(
            LimitReason.TOO_LARGE,
            f"The message is {len(raw)} bytes; the limit is {limits.max_bytes}.",
        )
    try:
        _Scanner(raw, limits).scan()
    except _Exceeded as exceeded:
        return exceeded.violation
    return None
