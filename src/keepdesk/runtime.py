"""What a running keepdesk holds for its whole life: settings, database, clock, blob store.

`create_app` builds one and keeps it in `app.state.runtime`; CLI commands build their own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType

from pydantic import TypeAdapter

from keepdesk.blobs import BlobStore
from keepdesk.clock import Clock, SystemClock
from keepdesk.config import Settings, instance_secret
from keepdesk.db import Database

log = logging.getLogger("keepdesk")


@dataclass
class TaskState:
    """What /metrics and the status show about one background task."""

    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    failures_in_a_row: int = 0
    # When a failing unit may be tried again (exponential back-off); None: at once.
    retry_at: datetime | None = None


# How `Runtime.tasks_file` holds them.
_TASK_STATES = TypeAdapter(dict[str, TaskState])


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    blobs: BlobStore
    secret: bytes
    tasks: dict[str, TaskState] = field(default_factory=dict)
    # Last-use records (an API token's, a browser session's) being written right now, so that
    # a burst of requests with one credential writes it once (accounts.dependencies).
    touching: set[tuple[str, int]] = field(default_factory=set)
    # True in the process that runs the background tasks (`workers.runner.run_workers`).
    runs_tasks: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        # The data directory holds the database, attachments and the instance secret.
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            sqlite_pool_size=settings.database_sqlite_pool_size,
            busy_timeout_ms=settings.database_busy_timeout_ms,
            echo=settings.database_echo,
        )
        return cls(
            settings=settings,
            db=db,
            clock=clock or SystemClock(),
            blobs=BlobStore(settings.blob_dir),
            secret=instance_secret(settings),
        )

    @property
    def tasks_file(self) -> Path:
        """Where the process that runs the background tasks leaves their state for the other
        processes of this host (`serve --processes N`, `serve --no-workers` beside `worker`)."""
        return self.settings.data_dir / "run" / "tasks.json"

    def save_task_states(self) -> None:
        """Write `tasks` for the others: a whole new file each time, never half of one. A
        status, so not fsynced: after a crash the next run writes it again."""
        path = self.tasks_file
        part = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            part.write_bytes(_TASK_STATES.dump_json(self.tasks))
            os.replace(part, path)
        except OSError as exc:
            log.warning("cannot write the background tasks' state to %s: %s", path, exc)

    def task_states(self) -> dict[str, TaskState]:
        """The background tasks' state: this process's own where it runs them, else what the
        process that does left in `tasks_file` (nothing if none runs on this host)."""
        if self.runs_tasks:
            return self.tasks
        try:
            return _TASK_STATES.validate_json(self.tasks_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the background tasks' state in %s: %s", self.tasks_file, exc)
            return {}

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.db.dispose()
