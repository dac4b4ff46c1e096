"""`/healthz` (the process answers) and `/readyz` (database reachable and at the migration head)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from keepdesk import schema
from keepdesk.accounts.dependencies import RuntimeDep

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
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
    return JSONResponse({"status": "ok", "checks": checks})
