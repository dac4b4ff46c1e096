"""FastAPI dependencies every REST module uses: the request's session and who is calling.

GET and HEAD get a session that only reads (`Database.reading`: on PostgreSQL, autocommit with
writes refused); anything else a write session (on SQLite, `BEGIN IMMEDIATE`), which the route
commits once before it answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import auth
from keepdesk.accounts.access import Actor
from keepdesk.errors import Unauthenticated
from keepdesk.runtime import Runtime

log = logging.getLogger("keepdesk.accounts")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _is_write(request: Request) -> bool:
    return request.method not in ("GET", "HEAD", "OPTIONS")


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    opening = runtime.db.session(write=True) if _is_write(request) else runtime.db.reading()
    async with opening as session:
        yield session
    # Once the request's own connection is back in the pool: a read request's record of use
    # (see `record_use`). Written here, a request never holds two connections at once, so a
    # burst larger than the pool cannot wait on itself.
    checked: auth.CredentialCheck | None = getattr(request.state, "credential_use", None)
    if checked is not None:
        await _write_use(runtime, checked)


async def record_use(
    request: Request, session: AsyncSession, checked: auth.CredentialCheck
) -> None:
    """Have a credential's use recorded, when its check says it is due: a change request
    writes it in its own transaction (a second writer would wait on ourselves); a read keeps
    its transaction read-only and has it written after (`get_session`)."""
    if checked.touch is None:
        return
    if _is_write(request):
        await session.execute(checked.touch)
    else:
        request.state.credential_use = checked


async def _write_use(runtime: Runtime, checked: auth.CredentialCheck) -> None:
    key = (checked.kind, checked.id)
    if checked.touch is None or key in runtime.touching:
        return  # not due, or another request is writing this one's use right now
    runtime.touching.add(key)
    try:
        async with runtime.db.session(write=True) as session:
            await session.execute(checked.touch)
            await session.commit()
    except SQLAlchemyError as exc:
        # A last use is a hint (the sessions list, token hygiene); the answer has been sent.
        log.warning("could not record the last use of %s %s: %s", checked.kind, checked.id, exc)
    finally:
        runtime.touching.discard(key)


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_api_actor(request: Request, session: Session, runtime: RuntimeDep) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "send an API token as 'Authorization: Bearer <token>' (create one with "
            "'keepdesk token create EMAIL')"
        )
    now = runtime.clock.now()
    actor, checked = await auth.authenticate_token(session, token.strip(), now=now)
    await record_use(request, session, checked)
    request.state.actor = actor
    return actor


ApiActor = Annotated[Actor, Depends(get_api_actor)]
