"""Logging set-up: readable text for people, one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# uvicorn adds `color_message`, the same text with terminal colours: not for a log collector.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            # Which process, under `serve --processes N` (and beside `keepdesk worker`).
            "pid": record.process,
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str, *, with_pid: bool = False) -> None:
    """Log to standard error; `with_pid` names the process in text lines too (JSON lines always
    carry it), for the serving processes of `serve --processes N`."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        process = " [%(process)d]" if with_pid else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s{process} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic reports every migration context it opens; /readyz opens one per probe.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
