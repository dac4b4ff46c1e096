"""Named crash points for fault tests (RELIABILITY.md CP1 to CP10, and PARSER, inside a mail
parser's worker process: `keepdesk.mail.parsers`).

`crash_point("CP4")` kills the process with SIGKILL when KEEPDESK_FAULT names that point. It
only arms when KEEPDESK_FAULTS_ENABLED=1 is set too; KEEPDESK_FAULT alone is refused, so one
stray variable cannot take a production instance down.

KEEPDESK_FAULT_AFTER=N makes the point fire the N-th time this process reaches it (default 1),
so a test can kill a fetcher on the third message of a batch in one run.
"""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}


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


def _fire_at() -> int:
    raw = os.environ.get("KEEPDESK_FAULT_AFTER", "1")
    try:
        times = int(raw)
    except ValueError:
        times = 0
    if times < 1:
        raise RuntimeError(f"KEEPDESK_FAULT_AFTER must be a whole number from 1 up, not {raw!r}")
    return times


def crash_point(name: str) -> None:
    if _armed() != name:
        return
    fire_at = _fire_at()
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= fire_at:
        os.kill(os.getpid(), signal.SIGKILL)
