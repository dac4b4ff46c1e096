"""The SMTP transport against a real server: each way a send can end is named, and only a
connection lost after the message was sent is "uncertain"."""

from __future__ import annotations

import ssl

import pytest

from keepdesk.mail.servers import Security, ServerUrl
from keepdesk.mail.smtp import Outcome, SendResult, send
from tests.mail_delivery.conftest import Sink, Tls, free_port

MAIL = (
    b"From: help@acme.example\r\nTo: carol@customer.test\r\nSubject: hello\r\n"
    b"Message-ID: <m1@acme.example>\r\n\r\nfirst line\r\n.a line that starts with a dot\r\n"
)


def plain(port: int) -> ServerUrl:
    return ServerUrl("smtp", Security.plain, "127.0.0.1", port, None, None)


async def deliver(
    server: ServerUrl,
    *,
    seconds: float = 5,
    tls_context: ssl.SSLContext | None = None,
) -> SendResult:
    return await send(
        server,
        envelope_from="help@acme.example",
        recipients=["carol@customer.test"],
        data=MAIL,
        timeout=seconds,
        tls_context=tls_context,
    )


async def test_a_mail_the_server_accepts_is_sent_byte_for_byte(sink: Sink) -> None:
    result = await deliver(plain(sink.port))

    assert result.outcome == Outcome.sent
    assert result.code == 250
    (got,) = sink.received
    assert got.mail_from == "help@acme.example"
    assert got.rcpt_tos == ["carol@customer.test"]
    # The dot-stuffing of the transport is undone by the server: the line arrives as written.
    assert got.data == MAIL


@pytest.mark.parametrize(
    ("stage", "reply", "outcome"),
    [
        ("rcpt", "451 4.3.0 try again later", Outcome.temporary),
        ("rcpt", "550 5.1.1 no such user", Outcome.permanent),
        ("data", "451 4.3.0 local problem", Outcome.temporary),
        ("data", "552 5.3.4 message too big", Outcome.permanent),
    ],
)
async def test_the_servers_answer_decides_between_retry_and_failure(
    sink: Sink, stage: str, reply: str, outcome: Outcome
) -> None:
    if stage == "rcpt":
        sink.reply_at_rcpt(reply)
    else:
        sink.reply_at_data(reply)

    result = await deliver(plain(sink.port))

    assert result.outcome == outcome
    assert result.code == int(reply[:3])
    assert reply in result.detail  # the server's own words, for the agent
    assert sink.received == []


async def test_one_refused_recipient_stops_the_mail_for_all(sink: Sink) -> None:
    sink.reply_at_rcpt("550 5.1.1 no such user", address="gone@customer.test")

    result = await send(
        plain(sink.port),
        envelope_from="help@acme.example",
        recipients=["carol@customer.test", "gone@customer.test"],
        data=MAIL,
        timeout=5,
    )

    assert result.outcome == Outcome.permanent
    assert "gone@customer.test" in result.detail
    assert sink.received == []


async def test_a_connection_dropped_after_the_final_dot_is_uncertain(sink: Sink) -> None:
    sink.drop_after_data()

    result = await deliver(plain(sink.port))

    assert result.outcome == Outcome.uncertain
    assert "may have been delivered" in result.detail
    assert len(sink.received) == 1  # the server did get it


async def test_no_answer_after_the_message_is_uncertain(sink: Sink) -> None:
    sink.hang_after_data()

    result = await deliver(plain(sink.port), seconds=1)

    assert result.outcome == Outcome.uncertain


async def test_no_answer_before_the_message_is_temporary(sink: Sink) -> None:
    sink.hang_at_rcpt()

    result = await deliver(plain(sink.port), seconds=1)

    assert result.outcome == Outcome.temporary
    assert sink.received == []


async def test_a_slow_server_within_the_timeout_still_gets_the_mail(sink: Sink) -> None:
    sink.delay_data(0.2)

    result = await deliver(plain(sink.port), seconds=5)

    assert result.outcome == Outcome.sent


async def test_a_closed_port_is_temporary() -> None:
    result = await deliver(plain(free_port()))

    assert result.outcome == Outcome.temporary
    assert "could not open a mail session" in result.detail


async def test_starttls_is_required_when_the_url_asks_for_it(sink: Sink) -> None:
    server = ServerUrl("smtp", Security.starttls, "127.0.0.1", sink.port, None, None)

    result = await deliver(server)

    assert result.outcome == Outcome.temporary
    assert "does not offer STARTTLS" in result.detail
    assert sink.received == []


async def test_starttls_upgrades_before_the_mail_goes_out(tls: Tls) -> None:
    sink = Sink(tls_context=tls.server).start()
    try:
        server = ServerUrl("smtp", Security.starttls, "127.0.0.1", sink.port, None, None)

        result = await deliver(server, tls_context=tls.client)

        assert result.outcome == Outcome.sent
        assert len(sink.received) == 1
    finally:
        sink.stop()


async def test_a_certificate_that_is_not_trusted_stops_the_mail(tls: Tls) -> None:
    sink = Sink(tls_context=tls.server).start()
    try:
        server = ServerUrl("smtp", Security.starttls, "127.0.0.1", sink.port, None, None)

        result = await deliver(server)  # the system's trust store does not know this cert

        assert result.outcome == Outcome.temporary
        assert sink.received == []
    finally:
        sink.stop()


async def test_implicit_tls_for_smtps(tls: Tls) -> None:
    sink = Sink(implicit_tls=tls.server).start()
    try:
        server = ServerUrl("smtp", Security.tls, "127.0.0.1", sink.port, None, None)

        result = await deliver(server, tls_context=tls.client)

        assert result.outcome == Outcome.sent
        assert len(sink.received) == 1
    finally:
        sink.stop()
