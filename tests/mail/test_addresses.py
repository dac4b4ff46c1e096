"""Who a message is from, parsed strictly enough that nobody can borrow another's identity."""

import email
import email.policy
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepdesk.mail.addresses import (
    format_address,
    is_valid_addr_spec,
    parse_address_list,
    parse_recipients,
    parse_reply_to,
    parse_sender,
    sanitize_header_value,
)
from keepdesk.mail.headers import decode_words


def message(headers: str) -> Message:
    raw = headers.strip("\n").replace("\n", "\r\n") + "\r\n\r\nbody\r\n"
    return email.message_from_bytes(raw.encode("utf-8"), policy=email.policy.default)


def test_a_plain_sender_is_verified_and_lower_cased() -> None:
    sender = parse_sender(message("From: Alice Lindqvist <Alice@Example.COM>"))
    assert sender.address == "alice@example.com"
    assert sender.display_name == "Alice Lindqvist"
    assert sender.is_verified
    assert sender.problems == []


def test_an_encoded_display_name_is_decoded() -> None:
    sender = parse_sender(message("From: =?UTF-8?Q?J=C3=BCrgen_Wei=C3=9F?= <juergen@example.org>"))
    assert (sender.display_name, sender.address) == ("Jürgen Weiß", "juergen@example.org")
    assert sender.is_verified


def test_an_encoded_word_inside_a_quoted_name_is_decoded() -> None:
    sender = parse_sender(message('From: "=?UTF-8?Q?Lindqvist=2C_Alice?=" <alice@example.com>'))
    assert sender.display_name == "Lindqvist, Alice"
    assert sender.is_verified


@pytest.mark.parametrize(
    "from_value",
    [
        "alice@example.com)<mallory@example.net>",
        "alice@example.com(<mallory@example.net>",
        "alice@example.com <mallory@example.net>",
        "<alice@example.com> <mallory@example.net>",
        "<alice@example.com> mallory@example.net",
    ],
)
def test_a_reply_to_corpus_320_is_not_verified_and_never_attributed_to_alice(
    from_value: str,
) -> None:
    sender = parse_sender(message(f"From: {from_value}"))
    assert not sender.is_verified
    assert sender.address != "alice@example.com"
    assert sender.problems


def test_the_cve_2023_27043_address_yields_no_mailbox_at_all() -> None:
    # Unpatched getaddresses() returns three addresses for this value.
    assert parse_address_list("alice@example.org)<bob@example.com>").mailboxes == []


def test_an_encoded_word_in_the_address_never_maps_to_the_decoded_user() -> None:
    sender = parse_sender(message("From: =?utf-8?q?ceo?=@example.com"))
    assert sender.address is None
    assert not sender.is_verified
    assert "encoded_word_in_address" in sender.problems


def test_an_encoded_at_sign_in_reply_to_yields_no_address() -> None:
    msg = message(
        "From: a@example.org\nReply-To: =?utf-8?q?alice=40example.com=3e=00?=@example.net"
    )
    assert parse_reply_to(msg) == []


def test_two_from_fields_keep_the_first_and_are_not_verified() -> None:
    msg = message("From: Mallory <mallory@example.net>\nFrom: Alice <alice@example.com>")
    sender = parse_sender(msg)
    assert sender.address == "mallory@example.net"
    assert not sender.is_verified
    assert "multiple_from" in sender.problems


def test_a_message_without_from_has_no_sender() -> None:
    sender = parse_sender(message("To: support@example.com"))
    assert (sender.address, sender.is_verified, sender.problems) == (None, False, ["no_from"])


@pytest.mark.parametrize(
    ("from_value", "problem"),
    [
        ("alice@@example..com", "invalid_address"),
        ("<>", "empty_address"),
        ('"unterminated <bob@example.org>', "unterminated_quote"),
        ("(comment only)", "empty_from"),
        ("", "empty_from"),
        ("Friends: alice@example.com;", "group_syntax"),
        ("alice@example.com, bob@example.org", "multiple_mailboxes"),
        ("alice@localhost", "invalid_address"),
        ("alice@[192.0.2.1]", "invalid_address"),
        ("<alice@example.com", "unterminated_angle_address"),
    ],
)
def test_malformed_from_fields_are_not_verified(from_value: str, problem: str) -> None:
    sender = parse_sender(message(f"From: {from_value}"))
    assert not sender.is_verified
    assert problem in sender.problems


def test_a_name_that_decodes_to_a_line_break_is_flattened_and_not_verified() -> None:
    raw = "From: =?UTF-8?Q?Alice=0D=0ABcc:_leak@example.net?= <alice@example.com>"
    sender = parse_sender(message(raw))
    assert sender.address == "alice@example.com"
    assert sender.display_name == "Alice Bcc: leak@example.net"
    assert not sender.is_verified


def test_a_nul_in_from_is_not_verified() -> None:
    msg = email.message_from_bytes(
        b"From: Alice <alice@example.com>\x00\r\n\r\nbody", policy=email.policy.default
    )
    assert not parse_sender(msg).is_verified


@pytest.mark.parametrize(
    "address",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        '"john doe"@example.com',
        "o'brien@example.ie",
        "x@xn--bcher-kva.example",
    ],
)
def test_valid_addr_specs(address: str) -> None:
    assert is_valid_addr_spec(address)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "a",
        "a@localhost",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@-example.com",
        "a@example..com",
        "a@exa_mple.com",
        "a@[192.0.2.1]",
        "ä@example.com",
        "a@bücher.example",
        "a b@example.com",
        "a@example.com\r\n",
        "a\x00@example.com",
        "=?utf-8?q?ceo?=@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        '"unterminated@example.com',
    ],
)
def test_invalid_addr_specs(address: str) -> None:
    assert not is_valid_addr_spec(address)


def test_reply_to_lists_every_valid_mailbox() -> None:
    msg = message(
        "From: a@example.com\nReply-To: Erik <erik@example.org>, Mallory <mallory@example.net>"
    )
    assert [m.address for m in parse_reply_to(msg)] == ["erik@example.org", "mallory@example.net"]


def test_a_mailbox_we_were_bccd_on_shows_in_delivered_to() -> None:
    msg = message(
        "From: bob@example.org\nTo: Carol <carol@example.net>\n"
        "Delivered-To: support@example.com\nX-Original-To: Support@Example.com"
    )
    recipients = parse_recipients(msg)
    assert recipients.to == ["carol@example.net"]
    assert "support@example.com" in recipients.all_addresses
    assert recipients.all_addresses.count("support@example.com") == 1


def test_recipient_groups_are_read_and_broken_fields_are_dropped() -> None:
    msg = message(
        "From: bob@example.org\nTo: undisclosed-recipients:;\n"
        "Cc: Team: a@example.com, b@example.com;, c@example.com\n"
        'Bcc: "alice@example.com" <mallory@example.net>, alice@example.com(<mallory@example.net>'
    )
    recipients = parse_recipients(msg)
    assert recipients.to == []
    assert recipients.cc == ["a@example.com", "b@example.com", "c@example.com"]
    assert recipients.bcc == []


@pytest.mark.parametrize(
    ("value", "clean"),
    [
        (
            "Hello\r\nX-Keepdesk-Priority: urgent\r\n\r\nbody",
            "Hello X-Keepdesk-Priority: urgent body",
        ),
        ("a\x00b", "a b"),
        ("line\u2028separator\x85next", "line separator next"),
        ("  tabs\tand   spaces ", "tabs and spaces"),
    ],
)
def test_header_values_for_outbound_mail_are_one_clean_line(value: str, clean: str) -> None:
    assert sanitize_header_value(value) == clean


def test_format_address_quotes_specials_and_encodes_non_ascii() -> None:
    assert format_address("", "a@example.com") == "a@example.com"
    assert format_address("Alice", "a@example.com") == "Alice <a@example.com>"
    assert format_address('Doe, "J"', "a@example.com") == '"Doe, \\"J\\"" <a@example.com>'
    encoded = format_address("Jürgen Weiß", "j@example.org")
    assert encoded.isascii()
    assert decode_words(encoded.rsplit(" <", 1)[0]) == "Jürgen Weiß"


@pytest.mark.parametrize(
    ("name", "address"),
    [("Alice\r\nBcc: x@example.net", "a@example.com"), ("Alice", "a@example.com\r\nBcc: x@y.z")],
)
def test_format_address_refuses_line_breaks(name: str, address: str) -> None:
    with pytest.raises(ValueError, match="CR, LF"):
        format_address(name, address)


def test_format_address_refuses_an_invalid_address() -> None:
    with pytest.raises(ValueError, match="address"):
        format_address("Alice", "alice@localhost")


@given(st.text(max_size=120).filter(lambda s: not {"\r", "\n", "\x00"} & set(s)))
def test_any_display_name_formats_to_one_parseable_line(name: str) -> None:
    value = format_address(name, "someone@example.org")
    assert value.isascii()
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in value)
    parsed = parse_address_list(value)
    assert [m.address for m in parsed.mailboxes] == ["someone@example.org"]
    assert parsed.mailboxes[0].display_name == sanitize_header_value(name).strip()


@given(st.text(max_size=200))
def test_parsing_any_address_field_never_raises(value: str) -> None:
    parsed = parse_address_list(value)
    assert all(is_valid_addr_spec(m.address) for m in parsed.mailboxes)
