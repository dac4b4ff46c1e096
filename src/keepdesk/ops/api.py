"""`/healthz` (the process answers), `/readyz` (database reachable and at the migration head, plus
the state of backups, which never fails readiness) and `GET /api/v1/status`: what an admin
checks first, in one answer (backups, each mailbox's fetching, undelivered mail, background
tasks)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from keepdesk import schema
from keepdesk.accounts.access import require_admin
from keepdesk.accounts.dependencies import ApiActor, RuntimeDep, Session
from keepdesk.backup import schedule as backup_schedule
from keepdesk.mail import mailboxes
from keepdesk.mail.schemas import FetchLog
from keepdesk.outbox import service as outbox
from keepdesk.outbox.models import DeliveryStatus
from keepdesk.runtime import TaskState
from keepdesk.web.schema import error_responses

router = APIRouter()

# Under app.API_PREFIX, which this package may not import (it sits below app).
STATUS_PATH = "/api/v1/status"


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        revision = await schema.current_revision(runtime.db)
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach the database means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    head = schema.head_revision()
    if revision != head:
        checks["migrations"] = f"at {revision or 'none'}, expected {head}: run 'keepdesk upgrade'"
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    checks["migrations"] = "ok"
    # Reported for whoever watches readiness, but a failed backup must not take the instance out
    # of the load balancer: agents keep working while an admin fixes the backups.
    try:
        async with runtime.db.session() as session:
            backups = await backup_schedule.status(
                session, runtime=runtime, now=runtime.clock.now()
            )
        checks["backup"] = "; ".join(backups.problems) or "ok"
    except Exception as exc:
        checks["backup"] = f"unknown: {type(exc).__name__}"
    return JSONResponse({"status": "ok", "checks": checks})


class BackupState(BaseModel):
    enabled: bool = Field(description="False when [backup] every_hours is 0.")
    last_ok_at: datetime | None = Field(description="When the newest verified backup started.")
    last_ok_path: str | None
    last_failure_at: datetime | None
    last_failure: str | None
    last_drill_at: datetime | None = Field(description="The last successful restore drill.")
    problems: list[str] = Field(description="What an admin must look at; empty when all is well.")


class MailboxState(BaseModel):
    id: int
    address: str
    is_active: bool
    alert: str | None = Field(description="Something an admin must know about this mailbox.")
    rescan_required: bool = Field(description="True after a UIDVALIDITY change, until rescanned.")
    fetch_log: FetchLog


class TaskRead(BaseModel):
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    failures_in_a_row: int

    @classmethod
    def of(cls, state: TaskState) -> TaskRead:
        return cls.model_validate(state, from_attributes=True)


class StatusRead(BaseModel):
    problems: list[str] = Field(
        description="Everything below that needs a person, one line each; empty when all is well."
    )
    backup: BackupState
    mailboxes: list[MailboxState]
    undelivered: dict[DeliveryStatus, int] = Field(
        description="Outbound mail not (yet) delivered, by state; `failed` is final."
    )
    tasks: dict[str, TaskRead] = Field(
        description="The background tasks this process runs (none under `serve --no-workers`: "
        "ask the workers' own /metrics), by name."
    )


def _mailbox_problems(box: MailboxState) -> list[str]:
    if not box.is_active:
        return []
    problems = [f"{box.address}: {box.alert}"] if box.alert else []
    log = box.fetch_log
    if log.last_error_at is not None and (
        log.last_success_at is None or log.last_error_at > log.last_success_at
    ):
        problems.append(f"{box.address}: fetching fails: {log.last_error}")
    return problems


@router.get(
    STATUS_PATH,
    tags=["status"],
    summary="What needs an admin: backups, mailboxes, undelivered mail, background tasks",
    responses=error_responses(401, 403, 503),
)
async def get_status(session: Session, actor: ApiActor, runtime: RuntimeDep) -> StatusRead:
    require_admin(actor)
    backups = await backup_schedule.status(session, runtime=runtime, now=runtime.clock.now())
    boxes = [
        MailboxState(
            id=box.id,
            address=box.address,
            is_active=box.is_active,
            alert=box.alert,
            rescan_required=box.rescan_required,
            fetch_log=FetchLog.model_validate(box, from_attributes=True),
        )
        for box in await mailboxes.list_mailboxes(session)
    ]
    counts = await outbox.undelivered_counts(session)
    undelivered = {s: counts.get(s, 0) for s in DeliveryStatus if s != DeliveryStatus.sent}
    tasks = {name: TaskRead.of(state) for name, state in sorted(runtime.task_states().items())}

    problems = [f"backup: {p}" for p in backups.problems]
    for box in boxes:
        problems += _mailbox_problems(box)
    problems += [
        f"task {name}: {task.failures_in_a_row} failures in a row, last: {task.last_error}"
        for name, task in tasks.items()
        if task.failures_in_a_row
    ]
    return StatusRead(
        problems=problems,
        backup=BackupState.model_validate(backups, from_attributes=True),
        mailboxes=boxes,
        undelivered=undelivered,
        tasks=tasks,
    )
