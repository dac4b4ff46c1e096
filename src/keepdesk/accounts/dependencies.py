"""FastAPI dependencies every REST module uses: the request's session and who is calling.

GET and HEAD get a read session; anything else a write session (on SQLite, `BEGIN IMMEDIATE`),
which the route commits once before it answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from keepdesk.accounts import auth
from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import ApiToken
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
    async with runtime.db.session(write=_is_write(request)) as session:
        yield session
    # Once the request's own connection is back in the pool: a read request's record of use
    # (see `touch_later`). Written here, a request never holds two connections at once, so a
    # burst larger than the pool cannot wait on itself.
    touch: tuple[tuple[str, int], Executable] | None = getattr(request.state, "touch", None)
    if touch is not None:
        await _record_use(runtime, *touch)


def touch_later(request: Request, key: tuple[str, int], statement: Executable) -> None:
    """Record a credential's use (`statement`, an UPDATE) after this read request: its own
    transaction stays read-only, and the write needs no second connection while it runs."""
    request.state.touch = (key, statement)


async def _record_use(runtime: Runtime, key: tuple[str, int], statement: Executable) -> None:
    if key in runtime.touching:
        return  # another request is writing this one's use right now
    runtime.touching.add(key)
    try:
        async with runtime.db.session(write=True) as session:
            await session.execute(statement)
            await session.commit()
    except SQLAlchemyError as exc:
        # A last use is a hint (the sessions list, token hygiene); the answer has been sent.
        log.warning("could not record the last use of %s %s: %s", key[0], key[1], exc)
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
    actor, token_id, stale = await auth.authenticate_token(session, token.strip(), now=now)
    if stale:
        touch = update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
        if _is_write(request):
            # Committed with the request's own change; a second writer would wait on ourselves.
            await session.execute(touch)
        else:
            touch_later(request, ("api_token", token_id), touch)
    request.state.actor = actor
    return actor


ApiActor = Annotated[Actor, Depends(get_api_actor)]
