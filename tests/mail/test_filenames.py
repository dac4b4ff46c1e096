"""The safe-name rule for attachment names and the download header built from it."""

import os.path
import re
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepdesk.tickets.filenames import content_disposition, is_reserved_name, safe_filename

SAFE = re.compile(r"[^/\\\x00-\x1f\x7f]+")
# Any code point, lone surrogates included: decoded mail can carry anything.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=400)


def assert_safe(name: str) -> None:
    assert SAFE.fullmatch(name), name
    assert 1 <= len(name.encode("utf-8")) <= 255
    assert name not in {".", ".."}
    assert not is_reserved_name(name)
    root = "/srv/keepdesk/blobs"
    assert os.path.commonpath([root, os.path.join(root, name)]) == root


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\..\\app\\keepdesk\\settings.py", "settings.py"),
        ("../../../var/lib/keepdesk/keepdesk.db", "keepdesk.db"),
        ("....//....//tmp/x.txt", "x.txt"),
        ("%2e%2e%2f%2e%2e%2fencoded.txt", "%2e%2e%2f%2e%2e%2fencoded.txt"),
        ("C:\\Users\\bo\\report.pdf", "report.pdf"),
    ],
)
def test_a_traversal_name_cannot_leave_the_folder(sent: str, shown: str) -> None:
    assert safe_filename(sent, 1) == shown
    assert_safe(shown)


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("invoice.pdf\x00.exe", "invoice.pdf.exe"),
        ("report\r\nContent-Type: text/html.txt", "html.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\u2066evil\u2069.txt", "evil.txt"),
        ("tab\tand\x1bescape\x7f.txt", "tabandescape.txt"),
        ("c1\x85\x9b.txt", "c1.txt"),
    ],
)
def test_controls_and_bidi_overrides_are_removed_so_the_real_extension_shows(
    sent: str, shown: str
) -> None:
    assert safe_filename(sent, 1) == shown


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1 .log", "_com1 .log"),
        ("LPT9.tar.gz", "_LPT9.tar.gz"),
        ("aux", "_aux"),
        (".htaccess", "_.htaccess"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10", "COM10"),
    ],
)
def test_windows_device_names_and_dot_files_get_a_prefix(sent: str, shown: str) -> None:
    assert safe_filename(sent, 1) == shown


@pytest.mark.parametrize("sent", [None, "", ".", "..", "...", " . ", "/", "dir/", "\x00\u202e"])
def test_a_name_that_disappears_becomes_attachment_n(sent: str | None) -> None:
    assert safe_filename(sent, 7) == "attachment-7"


def test_leading_spaces_and_trailing_dots_and_spaces_are_trimmed() -> None:
    assert safe_filename("   report.pdf. . ", 1) == "report.pdf"


def test_names_are_nfc_normalised() -> None:
    assert safe_filename("Cafe\u0301.txt", 1) == "Café.txt"


def test_a_long_ascii_name_is_cut_to_255_bytes_and_keeps_its_extension() -> None:
    name = safe_filename("A" * 1000 + ".txt", 1)
    assert len(name.encode()) == 255
    assert name.endswith(".txt")


def test_a_long_multibyte_name_is_cut_between_characters() -> None:
    name = safe_filename("漢" * 300 + ".txt", 1)
    assert len(name.encode()) <= 255
    assert name == "漢" * 83 + ".txt"


def test_a_long_extension_is_not_kept_at_the_cost_of_the_name() -> None:
    name = safe_filename("report." + "x" * 400, 1)
    assert name.startswith("report.")
    assert len(name.encode()) == 255


def test_a_cut_never_turns_a_name_into_a_device_name() -> None:
    assert safe_filename("CON" + " " * 300 + "x", 1) == "_CON"


@given(ANY_TEXT, st.integers(min_value=0, max_value=10_000))
def test_every_name_becomes_safe(sent: str, index: int) -> None:
    shown = safe_filename(sent, index)
    assert_safe(shown)
    assert safe_filename(shown, index) == shown


@given(st.text(alphabet=st.sampled_from("./\\ .\x00\u202eCONul1"), max_size=40))
def test_names_built_from_dangerous_pieces_become_safe(sent: str) -> None:
    assert_safe(safe_filename(sent, 1))


def test_the_download_header_has_an_ascii_fallback_and_the_exact_utf8_name() -> None:
    header = content_disposition("€ Rechnung März.txt")
    assert header.startswith('attachment; filename="')
    assert "filename*=UTF-8''%E2%82%AC%20Rechnung%20M%C3%A4rz.txt" in header
    assert 'filename="_ Rechnung Marz.txt"' in header


def test_a_hostile_name_cannot_inject_into_the_download_header() -> None:
    header = content_disposition('"><img src=x onerror=alert(1)>.png\r\nSet-Cookie: a=1')
    assert "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in fallback and "\\" not in fallback
    assert header.count('"') == 2


UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@given(ANY_TEXT)
def test_any_name_gives_a_well_formed_download_header(name: str) -> None:
    header = content_disposition(name)
    assert re.fullmatch(
        r'attachment; filename="[\x20\x21\x23-\x5b\x5d-\x7e]+"; filename\*=\S+', header
    )
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(encoded, errors="strict") == (UNSAFE.sub("", name) or "attachment")
