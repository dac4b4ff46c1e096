"""Who is acting: the `Actor` every service takes, and the checks on what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from keepdesk.accounts.models import AgentRole
from keepdesk.audit.service import AuditActor
from keepdesk.errors import PermissionDenied


@dataclass(frozen=True)
class Actor:
    """A signed-in agent, with the teams it belongs to at the moment of the request."""

    agent_id: int
    email: str
    name: str
    role: AgentRole
    team_ids: frozenset[int]

    @property
    def is_admin(self) -> bool:
        return self.role == AgentRole.admin

    @property
    def audit(self) -> AuditActor:
        return AuditActor(agent_id=self.agent_id, label=self.email)


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("only administrators may do this", code="admin_only")
