"""Who the benchmark acts as: the fixed cast of the data set and the credentials it uses.

The tokens are fixed strings (only their sha256 is stored, as for any token), so a cached data
set and a later run agree on them without writing them anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from keepdesk.accounts.auth import API_TOKEN_PREFIX, SESSION_TOKEN_PREFIX

AGENTS = 20
TEAMS = 5
CONTACTS = 20_000
# Agent ids 1 and 2 are admins; the rest are agents in one team each, every fourth in two.
ADMIN_ID = 1
# The agent the benchmark acts as: a member of the two largest teams (Support and Billing).
AGENT_ID = 3
# Shared by every data set so its Message-IDs verify; a benchmark secret, never a real one.
SECRET_KEY = "keepdesk-bench-secret-key-not-for-production-0001"  # noqa: S105
MAILBOX_ADDRESS = "support@bench.keepdesk.test"


def teams_of(agent_id: int) -> tuple[int, ...]:
    """The teams an agent belongs to; admins belong to none."""
    if agent_id <= 2:
        return ()
    first = (agent_id - 3) % TEAMS + 1
    if agent_id == AGENT_ID:
        return (1, 2)
    if agent_id % 4 == 0:
        return (first, first % TEAMS + 1)
    return (first,)


def members_of(team_id: int) -> list[int]:
    return [a for a in range(3, AGENTS + 1) if team_id in teams_of(a)]


@dataclass(frozen=True)
class Credentials:
    who: str
    agent_id: int
    api_token: str
    session_token: str


ADMIN = Credentials(
    "admin",
    ADMIN_ID,
    f"{API_TOKEN_PREFIX}bench-admin-0f3a9c1e5b7d2468ace0",
    f"{SESSION_TOKEN_PREFIX}bench-admin-7c1e5b0f3a9d2468ace0",
)
AGENT = Credentials(
    "agent",
    AGENT_ID,
    f"{API_TOKEN_PREFIX}bench-agent-5b7d0f3a9c1e2468ace0",
    f"{SESSION_TOKEN_PREFIX}bench-agent-9c1e0f3a5b7d2468ace0",
)
