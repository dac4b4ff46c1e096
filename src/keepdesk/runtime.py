"""What a running keepdesk holds for its whole life: settings, database, clock, blob store.

`create_app` builds one and keeps it in `app.state.runtime`; CLI commands build their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from keepdesk.blobs import BlobStore
from keepdesk.clock import Clock, SystemClock
from keepdesk.config import Settings, instance_secret
from keepdesk.db import Database


@dataclass
class TaskState:
    """What /metrics and the status show about one background task."""

    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    failures_in_a_row: int = 0
    # When a failing unit may be tried again (exponential back-off); None: at once.
    retry_at: datetime | None = None


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

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.db.dispose()
