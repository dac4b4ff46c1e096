"""What must hold for whatever any mail becomes (MANIFEST baseline, AC-17 to AC-20): no active
content in sanitised HTML, safe attachment names, safe downloads, nothing written outside the
blob store."""

from __future__ import annotations

import os
import re
import unicodedata
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import httpx

from keepdesk.tickets.filenames import is_reserved_name

# Active content: none of it may reach an API body_html (AC-17, corpus 501). Sanitised HTML
# escapes every `<` of text, so these can only be elements.
_ACTIVE_ELEMENTS = re.compile(r"<(script|iframe|object|embed|form|meta|base|svg|math)\b", re.I)
_ACTIVE_ATTRIBUTE = re.compile(r"on[a-z]+|(data-)?hx-.*|srcdoc|formaction|xlink:href", re.I)
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "background", "poster", "cite"})
_ACTIVE_URL = re.compile(r"(java|vb)script:", re.I)


class _Attributes(HTMLParser):
    """Every attribute of every element, values unescaped, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, name, value or "") for name, value in attrs]


def check_html(html: str | None) -> None:
    if html is None:
        return
    element = _ACTIVE_ELEMENTS.search(html)
    assert element is None, f"an active element survived sanitising: {element.group(0)!r}"
    parser = _Attributes()
    parser.feed(html)
    parser.close()
    for tag, name, value in parser.found:
        assert not _ACTIVE_ATTRIBUTE.fullmatch(name), f"<{tag} {name}=…> survived sanitising"
        if name == "style":
            assert not re.search(r"javascript:|expression\(|@import|position", value, re.I)
        if name in _URL_ATTRIBUTES:
            # Browsers drop tabs, newlines and controls inside a scheme: "jav\tascript:".
            squeezed = re.sub(r"[\x00-\x20]", "", value)
            assert not _ACTIVE_URL.match(squeezed), f"<{tag} {name}={value!r}> survived"


# Controls and bidi overrides have no place in a shown name (MANIFEST "safe name").
_UNSAFE_NAME = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check_name(name: str) -> None:
    assert 1 <= len(name.encode()) <= 255
    assert _UNSAFE_NAME.search(name) is None, name
    assert name == unicodedata.normalize("NFC", name)
    assert not name.startswith((".", " ")) and not name.endswith((".", " "))
    assert not is_reserved_name(name)


# RFC 6266: a quoted printable-ASCII fallback no name can break out of (no `"` or `\`), and
# the RFC 5987 percent-encoded form of the name.
_DISPOSITION = re.compile(
    r"attachment; filename=\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"; filename\*=UTF-8''([\w.~%-]*)", re.A
)


def check_download(response: httpx.Response, name: str) -> None:
    """Served safely (AC-20): a download, never sniffed, sandboxed, never active on our origin."""
    assert response.status_code == 200
    disposition = _DISPOSITION.fullmatch(response.headers["content-disposition"])
    assert disposition is not None, response.headers["content-disposition"]
    assert urllib.parse.unquote(disposition.group(1)) == name
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("sandbox")
    media = response.headers["content-type"].split(";")[0]
    assert media not in ("text/html", "image/svg+xml", "application/xhtml+xml")
    assert not media.endswith(("/xml", "+xml"))


def files_outside(root: Path, blob_dir: Path) -> set[str]:
    """Every file under `root` but in the blob store (which only ever holds our own keys)."""
    found: set[str] = set()
    for folder, folders, files in os.walk(root):
        if Path(folder) == blob_dir.parent:
            folders[:] = [f for f in folders if f != blob_dir.name]
        found.update(os.path.join(folder, name) for name in files)
    return found
