"""`ui.<name>` in templates: the small pieces every page shows, as Python functions.

A queue page draws fifty rows, each with a status and a priority badge, an assignee and a
time; as Jinja macros those 200 calls were a third of the page's rendering. The output is the
same markup the macros made, escaped the same way. What is not hot stays a macro in
`_macros.html`, reached through the same `ui` name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from markupsafe import Markup, escape


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


def status_badge(status: str) -> Markup:
    value = escape(str(status))
    return Markup(f'<span class="badge status-{value}">{value}</span>')


def priority_badge(priority: str) -> Markup:
    value = escape(str(priority))
    return Markup(f'<span class="badge priority-{value}">{value}</span>')


def person(p: _Person | None) -> Markup:
    if not p:
        return Markup('<span class="muted">—</span>')
    return Markup(
        f'<span class="person" title="{escape(p.email)}">{escape(p.name or p.email)}</span>'
    )


def when(at: datetime, now: datetime) -> Markup:
    return Markup(
        f'<time datetime="{escape(at.isoformat())}" title="{escape(timestamp(at))}">'
        f"{escape(ago(at, now))}</time>"
    )


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
