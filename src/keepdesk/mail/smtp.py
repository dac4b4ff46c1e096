"""Handing one mail to an SMTP server, and what became of it: sent, temporary (try again later),
permanent (the server refused it for good), or uncertain (it may have it).

Security is what the URL says: implicit TLS for `smtps://`, STARTTLS for `smtp+starttls://` (a
server that does not offer it is an error, never a plaintext fallback), plaintext only for
`smtp://`. Uncertain means the connection ended after the final `.` of DATA and before the
server's answer: RFC 5321 §4.1.1.4 lets the server deliver it, so a retry may duplicate it, and
it is retried with the same Message-ID so the copies are one mail to the reader (AC-15, F11).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

import aiosmtplib

from keepdesk.faults import crash_point
from keepdesk.mail.servers import Security, ServerUrl

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# QUIT after the answer is a courtesy; it must not hold the sender up.
_QUIT_TIMEOUT = 5.0


class Outcome(StrEnum):
    sent = "sent"
    temporary = "temporary"
    permanent = "permanent"
    uncertain = "uncertain"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    detail: str  # the server's words, or what went wrong; shown to agents
    code: int | None = None


class _Stage(Enum):
    connecting = "connecting"  # greeting, EHLO, TLS, AUTH: nothing about this mail yet
    envelope = "envelope"  # MAIL FROM, RCPT TO, the DATA command
    data_sent = "data_sent"  # the message and its final "." are on their way


async def send(
    server: ServerUrl,
    *,
    envelope_from: str,
    recipients: Sequence[str],
    data: bytes,
    timeout: float,  # noqa: ASYNC109 - aiosmtplib needs it per command too, not only overall
    tls_context: ssl.SSLContext | None = None,
) -> SendResult:
    """Deliver `data` to every recipient, or to none: one refused recipient stops the mail, so
    a retry never sends a second copy to those who got the first.

    `timeout` bounds the whole attempt, from connecting to the server's last answer.
    """
    where = f"{server.host}:{server.port}"
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        username=server.username,
        password=server.password,
        use_tls=server.security == Security.tls,
        # True, not None: None lets aiosmtplib carry on in plaintext when STARTTLS is missing.
        start_tls=server.security == Security.starttls,
        tls_context=tls_context,
        timeout=timeout,
    )
    stage = _Stage.connecting
    try:
        try:
            async with asyncio.timeout(timeout):
                result = await _connect(client, server, where)
                if result is None:
                    stage = _Stage.envelope
                    result = await _transaction(client, envelope_from, recipients)
                if result is None:
                    stage = _Stage.data_sent
                    reply = await _data(client, data, seconds=timeout)
                    if 200 <= reply.code < 300:
                        result = SendResult(
                            Outcome.sent, _words(reply.code, reply.message), reply.code
                        )
                    else:
                        result = _refused(
                            "the mail server rejected the message", reply.code, reply.message
                        )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return _interrupted(stage, where, exc)
        await _quit(client)
        return result
    finally:
        client.close()


async def check_connection(
    server: ServerUrl,
    *,
    timeout: float,  # noqa: ASYNC109 - aiosmtplib needs it per command too, not only overall
    tls_context: ssl.SSLContext | None = None,
) -> tuple[bool, str]:
    """Connect, EHLO, TLS and AUTH as `send` would, then QUIT: no mail is sent. Returns whether
    the server is ready for keepdesk's mail, and what it said or what went wrong."""
    where = f"{server.host}:{server.port}"
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        username=server.username,
        password=server.password,
        use_tls=server.security == Security.tls,
        start_tls=server.security == Security.starttls,
        tls_context=tls_context,
        timeout=timeout,
    )
    try:
        try:
            async with asyncio.timeout(timeout):
                result = await _connect(client, server, where)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return False, _interrupted(_Stage.connecting, where, exc).detail
        if result is not None:
            return False, result.detail
        extensions = ", ".join(sorted(client.esmtp_extensions)) or "none"
        login = f", logged in as {server.username}" if server.username else ""
        await _quit(client)
        return True, f"{where} accepted EHLO{login}; extensions: {extensions}"
    finally:
        client.close()


async def _connect(client: aiosmtplib.SMTP, server: ServerUrl, where: str) -> SendResult | None:
    """Greeting, EHLO, TLS and login; None when the server is ready for a mail."""
    try:
        await client.connect()
    except aiosmtplib.SMTPAuthenticationError as exc:
        return _failed_setup(f"the mail server at {where} refused keepdesk's login", exc)
    except aiosmtplib.SMTPResponseException as exc:
        return _failed_setup(f"the mail server at {where} turned keepdesk away", exc)
    except aiosmtplib.SMTPException as exc:
        # aiosmtplib raises the base class itself, and only that, for "SMTP STARTTLS extension
        # not supported by server."; its subclasses are timeouts and lost connections.
        if type(exc) is aiosmtplib.SMTPException and server.security == Security.starttls:
            return SendResult(
                Outcome.temporary,
                f"the mail server at {where} does not offer STARTTLS, which its "
                f"smtp+starttls:// URL requires; nothing was sent ({exc})",
            )
        raise
    except ssl.SSLError as exc:
        return SendResult(Outcome.temporary, f"TLS with the mail server at {where} failed: {exc}")
    return None


async def _transaction(
    client: aiosmtplib.SMTP, envelope_from: str, recipients: Sequence[str]
) -> SendResult | None:
    """MAIL FROM, every RCPT TO, and DATA up to the server's 354; None when it may go ahead."""
    try:
        await client.mail(envelope_from)
    except aiosmtplib.SMTPSenderRefused as exc:
        return _refused(
            f"the mail server refused the sender {envelope_from}", exc.code, exc.message
        )
    for recipient in recipients:
        try:
            await client.rcpt(recipient)
        except aiosmtplib.SMTPRecipientRefused as exc:
            return _refused(f"the mail server refused the recipient {recipient}", exc.code,
                            exc.message)  # fmt: skip
    reply = await client.execute_command(b"DATA")
    if reply.code != 354:
        return _refused("the mail server refused to take the message", reply.code, reply.message)
    return None


async def _data(client: aiosmtplib.SMTP, data: bytes, *, seconds: float) -> aiosmtplib.SMTPResponse:
    """Send the message and its final "." and read the answer. aiosmtplib's `data()` would also
    send the DATA command, and then a dropped connection could not tell "never got the message"
    (retry) from "got it, and maybe delivered it" (uncertain)."""
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    body = _LINE_END.sub(b"\r\n", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    # RFC 5321 §4.5.2: a line that starts with "." gets another one.
    protocol.write(_LEADING_DOT.sub(b"..", body) + b".\r\n")
    crash_point("CP9")
    return await protocol.read_response(timeout=seconds)


def _words(code: int, message: str) -> str:
    return " ".join(f"{code} {message}".split())


def _refused(what: str, code: int, message: str) -> SendResult:
    # RFC 5321 §4.2.1: 4yz is transient, 5yz permanent. Anything else is not a refusal we know.
    outcome = Outcome.permanent if 500 <= code < 600 else Outcome.temporary
    return SendResult(outcome, f"{what}: {_words(code, message)}", code)


def _failed_setup(what: str, exc: aiosmtplib.SMTPResponseException) -> SendResult:
    # Before MAIL FROM a refusal (greeting, EHLO, STARTTLS, AUTH) is about the server or our
    # credentials, never about this mail: it is retried, even a 5xx, so that fixing the
    # configuration delivers the waiting replies instead of losing them.
    return SendResult(Outcome.temporary, f"{what}: {_words(exc.code, exc.message)}", exc.code)


def _interrupted(stage: _Stage, where: str, exc: BaseException) -> SendResult:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and not str(exc):
        reason = "no answer in time"
    if stage == _Stage.data_sent:
        return SendResult(
            Outcome.uncertain,
            f"the connection to {where} ended after the message was sent and before the "
            f"server confirmed it ({reason}); it may have been delivered",
        )
    if stage == _Stage.connecting:
        return SendResult(
            Outcome.temporary, f"could not open a mail session with {where}: {reason}"
        )
    return SendResult(
        Outcome.temporary,
        f"the connection to {where} failed before the message was sent: {reason}",
    )


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit(timeout=_QUIT_TIMEOUT)
