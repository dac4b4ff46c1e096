"""Named crash points for fault tests (RELIABILITY.md CP1 to CP10).

`crash_point("CP4")` kills the process with SIGKILL when KEEPDESK_FAULT names that point. It
only arms when KEEPDESK_FAULTS_ENABLED=1 is set too; KEEPDESK_FAULT alone is refused, so one
stray variable cannot take a production instance down.
"""

from __future__ import annotations

import os
import signal


def _armed() -> str | None:
    name = os.environ.get("KEEPDESK_FAULT")
    if not name:
        return None
    if os.environ.get("KEEPDESK_FAULTS_ENABLED") != "1":
        raise RuntimeError(
            "KEEPDESK_FAULT is set but fault injection is not enabled; unset KEEPDESK_FAULT "
            "(it exists only for keepdesk's own crash tests)"
        )
    return name


def crash_point(name: str) -> None:
    if _armed() == name:
        os.kill(os.getpid(), signal.SIGKILL)
