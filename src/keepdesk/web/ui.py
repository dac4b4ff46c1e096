"""`ui.<name>` in templates: the small pieces every page shows, as Python functions.

A queue page draws fifty rows, each with a status and a priority badge, an assignee and a
time; as Jinja macros those 200 calls were a third of the page's rendering. The output is the
same markup the macros made, escaped the same way. What is not hot stays a macro in
`_macros.html`, reached through the same `ui` name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from markupsafe import Markup


class _Person(Protocol):
    email: str
    name: str


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


# Markup.format escapes each argument, as `{{ }}` does in a template.
_STATUS = Markup('<span class="badge status-{0}">{0}</span>')
_PRIORITY = Markup('<span class="badge priority-{0}">{0}</span>')
_PERSON = Markup('<span class="person" title="{0}">{1}</span>')
_NOBODY = Markup('<span class="muted">—</span>')
_WHEN = Markup('<time datetime="{0}" title="{1}">{2}</time>')


def status_badge(status: str) -> Markup:
    return _STATUS.format(str(status))


def priority_badge(priority: str) -> Markup:
    return _PRIORITY.format(str(priority))


def person(p: _Person | None) -> Markup:
    if not p:
        return _NOBODY
    return _PERSON.format(p.email, p.name or p.email)


def when(at: datetime, now: datetime) -> Markup:
    return _WHEN.format(at.isoformat(), timestamp(at), ago(at, now))


class UI:
    """The `ui` template global: these functions, then the macros of `web/_macros.html`."""

    status_badge = staticmethod(status_badge)
    priority_badge = staticmethod(priority_badge)
    person = staticmethod(person)
    when = staticmethod(when)

    def __init__(self, macros: Any) -> None:
        self._macros = macros

    def __getattr__(self, name: str) -> Any:
        return getattr(self._macros, name)
