"""REST routes for macros (canned responses): every agent lists them, admins write them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from keepdesk.accounts.dependencies import ApiActor, RuntimeDep, Session
from keepdesk.tickets import macros
from keepdesk.tickets.models import Macro, TicketStatus
from keepdesk.tickets.schemas import TagText
from keepdesk.web.schema import MAX_ID, ApiModel, IdPath, Text, error_responses

router = APIRouter(tags=["macros"], responses=error_responses(401, 422, 503))

MacroName = Annotated[Text, Field(min_length=1, max_length=100)]
MacroBody = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=macros.MAX_MACRO_BODY,
        description="Text with placeholders: `{{ requester.name }}`, `{{ ticket.number }}`, "
        "`{{ agent.name }}`.",
    ),
]
TeamId = Annotated[int | None, Field(ge=1, le=MAX_ID, description="The team it hands over to.")]


class MacroCreate(ApiModel):
    name: MacroName
    body: MacroBody
    status: TicketStatus | None = Field(None, description="The status it sets, if any.")
    tags: list[TagText] = Field(default_factory=list, max_length=20, description="Tags it adds.")
    team_id: TeamId = None


class MacroUpdate(ApiModel):
    name: MacroName | None = None
    body: MacroBody | None = None
    status: TicketStatus | None = Field(None, description="null clears it.")
    tags: list[TagText] | None = Field(None, max_length=20)
    team_id: TeamId = Field(None, description="null clears it.")


class MacroRead(BaseModel):
    id: int
    name: str
    body: str
    status: TicketStatus | None
    tags: list[str]
    team_id: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, macro: Macro) -> MacroRead:
        return cls.model_validate(macro, from_attributes=True)


class MacroList(BaseModel):
    items: list[MacroRead]


@router.get("/macros", summary="List macros, by name")
async def list_macros(session: Session, actor: ApiActor) -> MacroList:
    return MacroList(items=[MacroRead.of(m) for m in await macros.list_macros(session)])


@router.post(
    "/macros",
    status_code=201,
    summary="Create a macro (admins)",
    responses=error_responses(403, 409),
)
async def create_macro(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: MacroCreate
) -> MacroRead:
    macro = await macros.create_macro(
        session,
        actor=actor,
        name=body.name,
        body=body.body,
        status=body.status,
        tags=body.tags,
        team_id=body.team_id,
        now=runtime.clock.now(),
    )
    await session.commit()
    return MacroRead.of(macro)


@router.patch(
    "/macros/{macro_id}",
    summary="Change a macro (admins)",
    responses=error_responses(403, 404, 409),
)
async def update_macro(
    session: Session, actor: ApiActor, runtime: RuntimeDep, macro_id: IdPath, body: MacroUpdate
) -> MacroRead:
    given = body.model_fields_set
    cleared: dict[str, Any] = {
        field: getattr(body, field) for field in ("status", "team_id") if field in given
    }
    macro = await macros.update_macro(
        session,
        actor=actor,
        macro_id=macro_id,
        name=body.name,
        body=body.body,
        tags=body.tags,
        now=runtime.clock.now(),
        **cleared,
    )
    await session.commit()
    return MacroRead.of(macro)


@router.delete(
    "/macros/{macro_id}",
    status_code=204,
    summary="Delete a macro (admins)",
    responses=error_responses(403, 404),
)
async def delete_macro(
    session: Session, actor: ApiActor, runtime: RuntimeDep, macro_id: IdPath
) -> Response:
    await macros.delete_macro(session, actor=actor, macro_id=macro_id, now=runtime.clock.now())
    await session.commit()
    return Response(status_code=204)
