"""Whether a test that needs a system program may skip, or must fail (under CI)."""

from __future__ import annotations

import os

import pytest


def services_required() -> bool:
    """CI sets KEEPDESK_TEST_REQUIRE_SERVICES=1: a missing service is then a failure."""
    return os.environ.get("KEEPDESK_TEST_REQUIRE_SERVICES", "") not in ("", "0", "false")


def missing(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (KEEPDESK_TEST_REQUIRE_SERVICES is set, so this is a failure)")
    pytest.skip(reason)
