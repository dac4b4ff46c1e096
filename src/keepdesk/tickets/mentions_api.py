"""REST route for the caller's @mentions in internal notes."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from keepdesk.accounts.dependencies import ApiActor, Session
from keepdesk.tickets import mentions
from keepdesk.web.schema import error_responses

router = APIRouter(tags=["mentions"], responses=error_responses(401, 503))


class MentionRead(BaseModel):
    id: int
    ticket_number: int
    ticket_subject: str
    author: str = Field(description="The name of the agent who wrote the note.")
    excerpt: str = Field(description="The start of the note.")
    created_at: datetime
    read_at: datetime | None = Field(description="null while unread.")


class MentionList(BaseModel):
    items: list[MentionRead]
    unread: int = Field(description="How many of your mentions are unread.")


@router.get("/mentions", summary="Your @mentions in internal notes, unread first")
async def list_mentions(session: Session, actor: ApiActor) -> MentionList:
    items = await mentions.list_mentions(session, actor=actor)
    return MentionList(
        items=[
            MentionRead(
                id=m.id,
                ticket_number=m.ticket_number,
                ticket_subject=m.ticket_subject,
                author=m.author_name,
                excerpt=m.excerpt,
                created_at=m.at,
                read_at=m.read_at,
            )
            for m in items
        ],
        unread=await mentions.count_unread(session, actor=actor),
    )
