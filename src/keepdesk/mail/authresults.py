"""Reading our own mail server's verdict on a mail's sender (RFC 8601 Authentication-Results).

Only the top-most Authentication-Results header counts, and only when its authserv-id is the
one configured as ours: anything below it was written before the mail reached us, possibly by
the sender (corpus 323).
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

_DMARC = re.compile(r"(?:^|[;\s])dmarc\s*=\s*([a-z]+)", re.IGNORECASE)


def dmarc_result(raw: bytes, authserv_id: str | None) -> str | None:
    """`pass`, `fail`, `none`, … as our own server recorded it; None when it recorded nothing
    we can trust (no authserv-id configured, or the top-most header is not ours)."""
    if not authserv_id:
        return None
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    values = [v for k, v in headers.items() if k.lower() == "authentication-results"]
    if not values:
        return None
    top = " ".join(str(values[0]).split())
    server, _, results = top.partition(";")
    if server.strip().split()[0:1] != [authserv_id]:
        return None
    match = _DMARC.search(results)
    return match.group(1).lower() if match else None
