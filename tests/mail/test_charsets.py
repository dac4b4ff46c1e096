"""Decoding mail text from whatever charset label the sender declared."""

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepdesk.mail.charsets import WHATWG_LABELS, decode_text, encoding_for_label
from keepdesk.mail.headers import decode_words

C1_CONTROLS = {chr(c) for c in range(0x80, 0xA0)}


@pytest.mark.parametrize("label", ["iso-8859-1", "ISO_8859-1", "latin1", "us-ascii", "ascii"])
def test_latin1_and_ascii_labels_read_as_windows_1252_so_smart_quotes_survive(label: str) -> None:
    text, used = decode_text(b"\x93quoted\x94 \x85 price \x80 12", label)
    assert text == "\u201cquoted\u201d \u2026 price \u20ac 12"
    assert used == "windows-1252"
    assert not C1_CONTROLS & set(text)


def test_gb2312_mail_with_gbk_characters_decodes_through_gb18030() -> None:
    text, used = decode_text("张喆".encode("gbk"), "gb2312")
    assert text == "张喆"
    assert used == "gb18030"


@pytest.mark.parametrize(
    ("data", "label", "expected"),
    [
        ("Привет".encode("koi8_r"), "KOI8-R", "Привет"),
        ("プリンター".encode("cp932"), "Shift_JIS", "プリンター"),
        ("プリンター".encode("iso2022_jp"), "iso-2022-jp", "プリンター"),
        ("Größe".encode("iso8859_15"), '"iso-8859-15"', "Größe"),
    ],
)
def test_common_mail_charsets_decode(data: bytes, label: str, expected: str) -> None:
    assert decode_text(data, label)[0] == expected


def test_utf7_is_never_decoded_so_hidden_markup_stays_inert() -> None:
    text, used = decode_text(b"+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "utf-7")
    assert "<script>" not in text
    assert text == "+ADw-script+AD4-alert(1)+ADw-/script+AD4-"
    assert used == "utf-8"


@pytest.mark.parametrize("label", ["x-unknown-foo", "utf-7", "unicode_escape", "rot13", "base64"])
def test_unknown_labels_fall_back_to_utf8_then_windows_1252(label: str) -> None:
    assert decode_text("café".encode(), label) == ("café", "utf-8")
    assert decode_text(b"caf\xe9", label) == ("café", "windows-1252")


def test_undeclared_8bit_text_is_utf8_when_valid_else_windows_1252() -> None:
    assert decode_text("naïve café, 東京".encode(), None) == ("naïve café, 東京", "utf-8")
    assert decode_text(b"na\xefve caf\xe9", None) == ("naïve café", "windows-1252")


def test_nul_is_removed_from_decoded_text() -> None:
    assert decode_text(b"before\x00after", "utf-8")[0] == "beforeafter"
    assert decode_text("a\x00b".encode("utf-16-le"), "utf-16le")[0] == "ab"


def test_a_byte_order_mark_wins_over_the_label() -> None:
    assert decode_text(codecs.BOM_UTF8 + "é".encode(), "iso-8859-1") == ("é", "utf-8")
    assert decode_text(codecs.BOM_UTF16_LE + "é".encode("utf-16-le"), None) == ("é", "utf-16le")


def test_labels_are_matched_without_case_or_surrounding_space() -> None:
    assert encoding_for_label("  UTF8\t") == "utf-8"
    assert encoding_for_label("no-such-charset") is None
    assert encoding_for_label(None) is None


@pytest.mark.parametrize("label", sorted(WHATWG_LABELS))
def test_every_whatwg_label_decodes_every_byte_without_an_exception(label: str) -> None:
    text, used = decode_text(bytes(range(256)) + b"\x1b$B\x1b(B\xff\xfe", label)
    assert "\x00" not in text
    assert used


@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=20)))
def test_no_bytes_and_no_label_can_make_decoding_raise(data: bytes, label: str | None) -> None:
    text, used = decode_text(data, label)
    assert "\x00" not in text
    assert encoding_for_label(used) is not None or used in {"gb18030", "x-user-defined"}


def test_adjacent_encoded_words_join_without_their_separating_space() -> None:
    value = "=?UTF-8?B?8J+UpSBQcmludGVy?= =?UTF-8?Q?_on_fire?=\r\n =?ISO-8859-1?Q?_ca=E7a?= ok"
    assert decode_words(value) == "🔥 Printer on fire caça ok"


def test_a_character_split_across_two_encoded_words_survives() -> None:
    assert decode_words("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=") == "café"


def test_encoded_words_in_mislabelled_latin1_read_as_windows_1252() -> None:
    assert decode_words("=?iso-8859-1?Q?Smart_quotes_=93and=94_euro_=80?=") == (
        "Smart quotes \u201cand\u201d euro \u20ac"
    )


def test_an_unknown_charset_in_an_encoded_word_falls_back() -> None:
    assert decode_words("=?x-unknown-foo?Q?Unknown_charset_subject?=") == "Unknown charset subject"


@given(st.text(max_size=300))
def test_decoding_any_header_text_never_raises(value: str) -> None:
    assert "\x00" not in decode_words(value.replace("\x00", ""))
