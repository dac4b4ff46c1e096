"""Macros (canned responses): admin-written texts with placeholders, rendered in Jinja2's
sandbox, that may also set a ticket's status and team and add tags.

A macro's text is a template; what a customer wrote is only ever a *value* passed into it
(RELIABILITY.md AC-18). The sandbox sees three placeholders and nothing else.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor, require_admin
from keepdesk.audit import service as audit
from keepdesk.errors import Conflict, InvalidInput, NotFound
from keepdesk.tickets import service as ticket_service
from keepdesk.tickets.models import Macro, Ticket, TicketStatus
from keepdesk.tickets.policy import normalize_tags
from keepdesk.tickets.queries import get_visible_ticket

MAX_MACRO_BODY = 20_000
# What a rendered macro may grow to: a reply, not a way to fill memory (`{{ 'x' * 10**9 }}`).
MAX_RENDERED = 100_000
PLACEHOLDERS = ("requester.name", "ticket.number", "agent.name")


class _MacroSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` checked so one expression cannot build a huge value."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("exponent too large for a macro")
            return operator.pow(left, right)
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_RENDERED:
                raise SecurityError("that text would be too long for a macro")
        return operator.mul(left, right)


@functools.cache
def _sandbox() -> _MacroSandbox:
    # Plain text out: the reply box escapes it when the page is drawn.
    env = _MacroSandbox(autoescape=False, undefined=StrictUndefined)
    # Only the placeholders: not even Jinja's own `range`, `lipsum`, `cycler`, `namespace`.
    env.globals.clear()
    return env


def _problem(exc: Exception) -> InvalidInput:
    """A rendering failure as one readable line for the admin or agent."""
    if isinstance(exc, TemplateSyntaxError):
        return InvalidInput(
            f"the macro's text has an error on line {exc.lineno}: {exc.message}",
            code="macro_syntax",
        )
    if isinstance(exc, SecurityError):
        return InvalidInput(
            f"the macro's text uses something macros may not ({exc}); "
            f"use only {', '.join(PLACEHOLDERS)}",
            code="macro_unsafe",
        )
    if isinstance(exc, UndefinedError):
        return InvalidInput(
            f"the macro's text names an unknown placeholder ({exc.message}); "
            f"use only {', '.join(PLACEHOLDERS)}",
            code="macro_placeholder",
        )
    return InvalidInput(f"the macro's text could not be filled in: {exc}", code="macro_error")


def render_macro(body: str, *, requester_name: str, ticket_number: int, agent_name: str) -> str:
    """The macro's text with its placeholders filled in; `InvalidInput` naming the problem."""
    values: dict[str, Any] = {
        "requester": SimpleNamespace(name=requester_name),
        "ticket": SimpleNamespace(number=ticket_number),
        "agent": SimpleNamespace(name=agent_name),
    }
    try:
        text = _sandbox().from_string(body).render(values)
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise _problem(exc) from None
    if len(text) > MAX_RENDERED:
        raise InvalidInput("the filled-in macro is too long", code="macro_error")
    return text


def _check_body(body: str) -> str:
    if not body.strip():
        raise InvalidInput("a macro needs a text", code="empty_macro")
    if len(body) > MAX_MACRO_BODY:
        raise InvalidInput(f"a macro's text is at most {MAX_MACRO_BODY} characters")
    # Fails on save, not on the agent who picks it later.
    render_macro(body, requester_name="Carol", ticket_number=1, agent_name="Alice")
    return body


def _check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("a macro needs a name", code="empty_name")
    return name[:100]


async def _check_unique(session: AsyncSession, name: str, *, other_than: int | None) -> None:
    query = select(Macro.id).where(func.lower(Macro.name) == name.lower())
    if other_than is not None:
        query = query.where(Macro.id != other_than)
    if await session.scalar(query) is not None:
        raise Conflict(f"a macro named {name!r} exists already", code="macro_exists")


# --- queries ----------------------------------------------------------------------------------


async def list_macros(session: AsyncSession) -> list[Macro]:
    """Every macro, by name: macros are few (tens), so one page."""
    return list((await session.scalars(select(Macro).order_by(Macro.name, Macro.id))).all())


async def get_macro(session: AsyncSession, *, macro_id: int) -> Macro:
    macro = await session.get(Macro, macro_id)
    if macro is None:
        raise NotFound(f"no macro {macro_id}", code="not_found")
    return macro


# --- commands (admins) ------------------------------------------------------------------------


def _audit_data(macro: Macro) -> dict[str, Any]:
    return {
        "name": macro.name,
        "status": macro.status.value if macro.status else None,
        "tags": macro.tags,
        "team_id": macro.team_id,
    }


async def create_macro(
    session: AsyncSession,
    *,
    actor: Actor,
    name: str,
    body: str,
    now: datetime,
    status: TicketStatus | None = None,
    tags: Sequence[str] = (),
    team_id: int | None = None,
) -> Macro:
    require_admin(actor)
    name = _check_name(name)
    await _check_unique(session, name, other_than=None)
    if team_id is not None:
        await accounts.check_team(session, team_id)
    macro = Macro(
        name=name,
        body=_check_body(body),
        status=status,
        tags=normalize_tags(tags),
        team_id=team_id,
        created_at=now,
        updated_at=now,
    )
    session.add(macro)
    await session.flush()
    await audit.record(
        session,
        actor=actor.audit,
        action="macro.created",
        object_type="macro",
        object_id=macro.id,
        at=now,
        data=_audit_data(macro),
    )
    return macro


_KEEP: Any = ticket_service.UNSET


async def update_macro(
    session: AsyncSession,
    *,
    actor: Actor,
    macro_id: int,
    now: datetime,
    name: str | None = None,
    body: str | None = None,
    status: TicketStatus | Any | None = _KEEP,
    tags: Sequence[str] | None = None,
    team_id: int | Any | None = _KEEP,
) -> Macro:
    """Change what is given; `status` and `team_id` take None to clear them."""
    require_admin(actor)
    macro = await get_macro(session, macro_id=macro_id)
    if name is not None:
        name = _check_name(name)
        await _check_unique(session, name, other_than=macro.id)
        macro.name = name
    if body is not None:
        macro.body = _check_body(body)
    if status is not _KEEP:
        macro.status = status
    if tags is not None:
        macro.tags = normalize_tags(tags)
    if team_id is not _KEEP:
        if team_id is not None:
            await accounts.check_team(session, team_id)
        macro.team_id = team_id
    macro.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor=actor.audit,
        action="macro.changed",
        object_type="macro",
        object_id=macro.id,
        at=now,
        data=_audit_data(macro),
    )
    return macro


async def delete_macro(
    session: AsyncSession, *, actor: Actor, macro_id: int, now: datetime
) -> None:
    require_admin(actor)
    macro = await get_macro(session, macro_id=macro_id)
    data = _audit_data(macro)
    await session.delete(macro)
    await session.flush()
    await audit.record(
        session,
        actor=actor.audit,
        action="macro.deleted",
        object_type="macro",
        object_id=macro_id,
        at=now,
        data=data,
    )


# --- using a macro on a ticket (any agent who sees the ticket) --------------------------------


def render_for_ticket(*, actor: Actor, ticket: Ticket, macro: Macro) -> str:
    requester = ticket.requester
    return render_macro(
        macro.body,
        requester_name=requester.name or requester.email,
        ticket_number=ticket.number,
        agent_name=actor.name,
    )


def macro_changes(macro: Macro, ticket: Ticket) -> ticket_service.TicketChanges:
    """What applying the macro changes: its status and team if it has them, its tags added."""
    current = [t.name for t in ticket.tags]
    added = [t for t in macro.tags if t not in current]
    return ticket_service.TicketChanges(
        status=macro.status,
        team_id=macro.team_id if macro.team_id is not None else ticket_service.UNSET,
        tags=current + added if added else None,
    )


async def apply_macro(
    session: AsyncSession,
    *,
    actor: Actor,
    number: int,
    macro_id: int,
    now: datetime,
    expected_version: int | None = None,
) -> tuple[Ticket, str]:
    """Fill in the macro's text for this ticket and make its changes to the ticket, as one.
    The text is returned for the composer; nothing is sent until the agent sends it."""
    ticket = await get_visible_ticket(session, actor=actor, number=number)
    macro = await get_macro(session, macro_id=macro_id)
    # Rendered first: a broken macro changes nothing.
    text = render_for_ticket(actor=actor, ticket=ticket, macro=macro)
    ticket = await ticket_service.update_ticket(
        session,
        actor=actor,
        number=number,
        changes=macro_changes(macro, ticket),
        now=now,
        expected_version=expected_version,
    )
    return ticket, text
