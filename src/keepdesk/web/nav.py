"""The navigation every signed-in page shows: the agent's queues, by URL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MINE = "/queue/mine"
UNASSIGNED = "/queue/unassigned"
ALL = "/queue/all"
SIGN_IN = "/sign-in"
ADMIN = "/admin/agents"
# The search box in every page's top bar submits here (GET, `q`).
SEARCH = "/search"
HOME = MINE


def team_queue(team_id: int) -> str:
    return f"/queue/team/{team_id}"


@dataclass(frozen=True)
class NavItem:
    url: str
    label: str


def navigation(*, teams: Sequence[tuple[int, str]], is_admin: bool) -> list[NavItem]:
    items = [NavItem(MINE, "My tickets"), NavItem(UNASSIGNED, "Unassigned")]
    items += [NavItem(team_queue(team_id), name) for team_id, name in teams]
    if is_admin:
        items.append(NavItem(ALL, "All tickets"))
        items.append(NavItem(ADMIN, "Admin"))
    return items
