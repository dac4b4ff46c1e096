"""What the multi-instance story needs: a session-wide Dovecot of its own (tests/mail_fetch has
one for its own folder) and the SMTP sink of tests/mail_delivery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mail_delivery.conftest import Sink
from tests.support.dovecot import DovecotServer, find_dovecot, start_dovecot
from tests.support.services import missing


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer | None]:
    binary = find_dovecot()
    if binary is None:
        yield None
        return
    server = start_dovecot(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot(dovecot_server: DovecotServer | None) -> DovecotServer:
    if dovecot_server is None:
        missing("Dovecot is not installed (apt install dovecot-imapd)")
    assert dovecot_server is not None
    return dovecot_server


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()
