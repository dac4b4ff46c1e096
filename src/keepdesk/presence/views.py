"""The ticket page's presence line: each poll is the agent's heartbeat, and is answered with who
else is on the ticket ("Also here: Bob (viewing) · Dave (typing a reply)")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from keepdesk.accounts.browser import PageBrowser
from keepdesk.accounts.dependencies import Session
from keepdesk.presence.hub import Heartbeat, Presence
from keepdesk.tickets import queries
from keepdesk.web.pages import PagesDep
from keepdesk.web.schema import NumberPath

TEMPLATES = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)


def get_presence(request: Request) -> Presence:
    presence: Presence = request.app.state.presence
    return presence


@router.post("/tickets/{number}/presence")
async def heartbeat(
    request: Request,
    session: Session,
    pages: PagesDep,
    browser: PageBrowser,
    number: NumberPath,
    typing: Annotated[Literal["0", "1"], Form()] = "0",
) -> Response:
    # Only a ticket the agent may see: an outsider learns nothing, not even that it exists.
    await queries.get_visible_ticket(session, actor=browser.actor, number=number)
    # Nothing in the database changes: the transaction is left to roll back.
    presence = get_presence(request)
    actor = browser.actor
    await presence.beat(
        Heartbeat(number=number, agent_id=actor.agent_id, name=actor.name, is_typing=typing == "1")
    )
    others = presence.others(number=number, agent_id=actor.agent_id)
    return pages.render(request, "presence/presence.html", {"others": others}, fragment="presence")
