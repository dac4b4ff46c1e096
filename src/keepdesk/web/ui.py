"""`ui.<name>` in templates: the small pieces every page shows, as Python functions.

A queue page draws fifty rows, each with a status and a priority badge, an assignee and a
time; as Jinja macros those 200 calls were a third of the page's rendering. The output is the
same markup the macros made, escaped the same way. The rows themselves are made here too
(`ticket_rows`): written out in a template, each row's twenty values went through Jinja's
escaping one by one, and fifty rows took 0.9 ms, about a fifth of a queue page. What is not
hot stays a macro in `_macros.html`, reached through the same `ui` name.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from itertools import repeat
from typing import Any, Protocol

from markupsafe import Markup, escape


class _Person(Protocol):
    email: str
    name: str


class _Team(Protocol):
    name: str


class _TicketRow(Protocol):
    """What a ticket list shows of a ticket (`tickets.rows.TicketRow`)."""

    number: int
    subject: str
    status: str
    priority: str
    requester: _Person
    team: _Team | None
    assignee: _Person | None
    tags: tuple[str, ...]
    updated_at: datetime


def ago(at: datetime, now: datetime) -> str:
    """`5 min ago`, `3 h ago`, `2 d ago`, then the date: calm, and the same on every reload."""
    seconds = int((now - at).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    if seconds < 7 * 86400:
        return f"{seconds // 86400} d ago"
    return at.strftime("%Y-%m-%d")


def timestamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


# Made once per value: a status or a priority is one of a handful of words (the web layer does
# not know which: tickets defines them). Markup.format escapes them.
@functools.lru_cache(maxsize=64)
def _badge(kind: str, value: str) -> Markup:
    return Markup('<span class="badge {0}-{1}">{1}</span>').format(kind, value)


_NOBODY = Markup('<span class="muted">—</span>')


def status_badge(status: str) -> Markup:
    return _badge("status", str(status))


def priority_badge(priority: str) -> Markup:
    return _badge("priority", str(priority))


def person(p: _Person | None) -> Markup:
    if not p:
        return _NOBODY
    email, name = escape(p.email), escape(p.name or p.email)
    return Markup(f'<span class="person" title="{email}">{name}</span>')  # noqa: S704 - escaped


def when(at: datetime, now: datetime) -> Markup:
    # A datetime's ISO form, its minute and `ago` are digits, `-:.+TZ` and fixed words: there
    # is nothing to escape, and this runs for every row of a list.
    return Markup(  # noqa: S704 - no markup can come from a datetime
        f'<time datetime="{at.isoformat()}" title="{timestamp(at)}">{ago(at, now)}</time>'
    )


def ticket_rows(tickets: Iterable[_TicketRow], now: datetime) -> Markup:
    """The rows of a ticket list (queues and search, `tickets/_rows.html`): a checkbox for
    bulk changes, the number, subject and tags, requester, status, priority, assignee, team
    and last activity. Every text is escaped; a number is digits."""
    return Markup("".join(map(_ticket_row, tickets, repeat(now))))  # noqa: S704 - escaped


def _ticket_row(t: _TicketRow, now: datetime) -> str:
    n = int(t.number)
    tags = "".join(f'<span class="tag">{escape(tag)}</span>' for tag in t.tags)
    if tags:
        tags = "\n    " + tags
    requester = t.requester
    team = escape(t.team.name) if t.team else "—"
    return (
        f'<tr data-row id="ticket-{n}">\n'
        f'  <td class="select"><input type="checkbox" name="numbers" value="{n}" form="bulk" '
        f'aria-label="Select #{n}"></td>\n'
        f'  <td class="num"><a href="/tickets/{n}" data-open>#{n}</a></td>\n'
        f'  <td class="subject">\n    <a href="/tickets/{n}">{escape(t.subject)}</a>{tags}\n'
        "  </td>\n"
        f'  <td class="requester" title="{escape(requester.email)}">'
        f"{escape(requester.name or requester.email)}</td>\n"
        f"  <td>{status_badge(t.status)}</td>\n"
        f"  <td>{priority_badge(t.priority)}</td>\n"
        f'  <td class="assignee">{person(t.assignee)}</td>\n'
        f'  <td class="team">{team}</td>\n'
        f'  <td class="updated">{when(t.updated_at, now)}</td>\n'
        "</tr>\n"
    )


class UI:
    """The `ui` template global: these functions, then the macros of `web/_macros.html`."""

    status_badge = staticmethod(status_badge)
    priority_badge = staticmethod(priority_badge)
    person = staticmethod(person)
    when = staticmethod(when)
    ticket_rows = staticmethod(ticket_rows)

    def __init__(self, macros: Any) -> None:
        self._macros = macros

    def __getattr__(self, name: str) -> Any:
        return getattr(self._macros, name)
