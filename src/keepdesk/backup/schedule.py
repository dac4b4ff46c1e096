"""Scheduled backups, their retention, the weekly restore drill, and the status admins see.

Every run is recorded in `backup_runs`; a failure is logged, counted on /metrics and shown in
the status, so a backup that stopped working cannot go unnoticed for weeks (AC-26, AC-27).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.backup import service as backups
from keepdesk.backup.models import BackupRun, RunKind, RunStatus
from keepdesk.runtime import Runtime

log = logging.getLogger("keepdesk.backup")

DRILL_EVERY = timedelta(days=7)
# F15: a restore drill older than this is an alert.
DRILL_STALE = timedelta(days=8)


async def _latest(session: AsyncSession, kind: RunKind, status: RunStatus) -> BackupRun | None:
    return await session.scalar(
        select(BackupRun)
        .where(BackupRun.kind == kind, BackupRun.status == status)
        .order_by(BackupRun.started_at.desc(), BackupRun.id.desc())
        .limit(1)
    )


async def _start(runtime: Runtime, kind: RunKind) -> int:
    async with runtime.db.session(write=True) as session:
        run = BackupRun(kind=kind, status=RunStatus.running, started_at=runtime.clock.now())
        session.add(run)
        await session.commit()
        return run.id


async def _finish(runtime: Runtime, run_id: int, **values: object) -> None:
    async with runtime.db.session(write=True) as session:
        run = await session.get(BackupRun, run_id)
        assert run is not None
        for name, value in values.items():
            setattr(run, name, value)
        run.finished_at = runtime.clock.now()
        await session.commit()


async def scheduled_backup(runtime: Runtime) -> None:
    """The worker unit: a backup when the last good one is due, then a drill when due."""
    settings = runtime.settings
    if settings.backup_every_hours == 0:
        return
    now = runtime.clock.now()
    async with runtime.db.session() as session:
        last = await _latest(session, RunKind.backup, RunStatus.ok)
    if last is None or now - last.started_at >= timedelta(hours=settings.backup_every_hours):
        await take_backup(runtime)
    await maybe_drill(runtime)


async def take_backup(runtime: Runtime) -> BackupRun | None:
    settings = runtime.settings
    now = runtime.clock.now()
    suffix = ".tar.kdenc" if settings.backup_public_key else ".tar"
    target = settings.backups_dir / f"keepdesk-{now:%Y%m%dT%H%M%SZ}{suffix}"
    run_id = await _start(runtime, RunKind.backup)
    try:
        manifest = await backups.create_backup(
            db=runtime.db,
            blobs=runtime.blobs,
            output=target,
            now=now,
            secret_file=settings.data_dir / "secret_key",
            public_key=settings.backup_public_key,
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.error("scheduled backup failed: %s", error)
        await _finish(runtime, run_id, status=RunStatus.failed, error=error[:4000])
        return None
    size = (await asyncio.to_thread(target.stat)).st_size
    await _finish(
        runtime,
        run_id,
        status=RunStatus.ok,
        path=str(target),
        size=size,
        rows=sum(manifest.counts.values()),
    )
    log.info("scheduled backup written and verified: %s", target)
    await prune(runtime)
    return None


async def prune(runtime: Runtime) -> None:
    """Delete scheduled backups beyond `backup_keep`, oldest first; never the newest good one."""
    async with runtime.db.session(write=True) as session:
        good = (
            await session.scalars(
                select(BackupRun)
                .where(
                    BackupRun.kind == RunKind.backup,
                    BackupRun.status == RunStatus.ok,
                    BackupRun.path.is_not(None),
                )
                .order_by(BackupRun.started_at.desc(), BackupRun.id.desc())
            )
        ).all()
        for run in good[runtime.settings.backup_keep :]:
            assert run.path is not None
            await asyncio.to_thread(Path(run.path).unlink, missing_ok=True)
            log.info("removed old backup %s", run.path)
            run.path = None
        await session.commit()


async def maybe_drill(runtime: Runtime) -> None:
    now = runtime.clock.now()
    async with runtime.db.session() as session:
        last_drill = await _latest(session, RunKind.drill, RunStatus.ok)
        latest = await _latest(session, RunKind.backup, RunStatus.ok)
    if latest is None or latest.path is None:
        return
    if last_drill is not None and now - last_drill.started_at < DRILL_EVERY:
        return
    if runtime.settings.backup_public_key:
        return  # only the offline private key can open these; see docs/operate.md
    run_id = await _start(runtime, RunKind.drill)
    try:
        report = await backups.verify_by_restoring(
            Path(latest.path), passphrase=None, private_key=None
        )
    except Exception as exc:
        error = f"restoring {latest.path} failed: {type(exc).__name__}: {exc}"
        log.error("restore drill failed: %s", error)
        await _finish(
            runtime, run_id, status=RunStatus.failed, error=error[:4000], path=latest.path
        )
        return
    await _finish(runtime, run_id, status=RunStatus.ok, path=latest.path)
    log.info("restore drill: %s", report)


@dataclass(frozen=True)
class BackupStatus:
    enabled: bool
    last_ok_at: datetime | None
    last_ok_path: str | None
    last_failure_at: datetime | None
    last_failure: str | None
    last_drill_at: datetime | None
    problems: list[str]


async def status(session: AsyncSession, *, runtime: Runtime, now: datetime) -> BackupStatus:
    settings = runtime.settings
    ok = await _latest(session, RunKind.backup, RunStatus.ok)
    failed = await _latest(session, RunKind.backup, RunStatus.failed)
    drill = await _latest(session, RunKind.drill, RunStatus.ok)
    failed_drill = await _latest(session, RunKind.drill, RunStatus.failed)
    problems: list[str] = []
    enabled = settings.backup_every_hours > 0
    if enabled:
        due = timedelta(hours=settings.backup_every_hours) * 2
        if ok is None or now - ok.started_at > due:
            problems.append("no verified backup within twice the schedule")
        if failed is not None and (ok is None or failed.started_at > ok.started_at):
            problems.append(f"the last backup failed: {failed.error}")
        if (
            not settings.backup_public_key
            and ok is not None
            and (drill is None or now - drill.started_at > DRILL_STALE)
        ):
            problems.append("no successful restore drill in the last 8 days")
        if failed_drill is not None and (
            drill is None or failed_drill.started_at > drill.started_at
        ):
            problems.append(f"the last restore drill failed: {failed_drill.error}")
    return BackupStatus(
        enabled=enabled,
        last_ok_at=ok.started_at if ok else None,
        last_ok_path=ok.path if ok else None,
        last_failure_at=failed.started_at if failed else None,
        last_failure=failed.error if failed else None,
        last_drill_at=drill.started_at if drill else None,
        problems=problems,
    )
