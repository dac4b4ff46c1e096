"""FastAPI dependencies every REST module uses: the request's session and who is calling.

GET and HEAD get a read session; anything else a write session (on SQLite, `BEGIN IMMEDIATE`),
which the route commits once before it answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import auth
from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import ApiToken
from keepdesk.errors import Unauthenticated
from keepdesk.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _is_write(request: Request) -> bool:
    return request.method not in ("GET", "HEAD", "OPTIONS")


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.session(write=_is_write(request)) as session:
        yield session


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
            # A read request keeps its transaction read-only; record the use on the side.
            async with runtime.db.session(write=True) as side:
                await side.execute(touch)
                await side.commit()
    request.state.actor = actor
    return actor


ApiActor = Annotated[Actor, Depends(get_api_actor)]
