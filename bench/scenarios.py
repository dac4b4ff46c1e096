"""The HTTP scenarios: what an agent's day asks of the server, each as a list of requests.

A scenario names who it acts as (an admin sees every ticket; the agent sees two teams and its
own, which puts the visibility filter in every query) and which ceiling it is measured against:
API calls against the bare JSON endpoint, pages against the 50-row Jinja2 page. A scenario
whose route does not exist yet is reported as "not built yet", never silently dropped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import people
from bench.load import Check, Request, expect_status, request
from bench.text import TextMaker
from keepdesk.pagination import encode_cursor

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Sample:
    """Facts read from the working copy before the run: what the requests point at."""

    visible_numbers: list[int]  # tickets the agent may see
    long_ticket: int | None  # a ticket with a 20+ message thread the agent may see
    deep_cursor: str  # a cursor halfway down the agent's default list
    next_number: int  # the number the next created ticket will get
    search_term: str
    open_team: int


@dataclass
class Scenario:
    name: str
    label: str
    ceiling: str  # "json" or "table"
    build: Callable[[int], list[Request]] = field(repr=False)
    check: Check = field(default_factory=lambda: expect_status(200), repr=False)
    requests: int = 1000
    writes: bool = False
    missing: str | None = None  # why it cannot run here, e.g. "not built yet"


def _auth(who: people.Credentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {who.api_token}", "Accept": "application/json"}


def _cookie(who: people.Credentials) -> dict[str, str]:
    return {"Cookie": f"keepdesk_session={who.session_token}", "Accept": "text/html"}


def _get(path: str, headers: dict[str, str]) -> Callable[[int], list[Request]]:
    return lambda n: [request("GET", path, host=HOST, headers=headers)]


def api_scenarios(sample: Sample, *, search_path: str | None) -> list[Scenario]:
    admin, agent = _auth(people.ADMIN), _auth(people.AGENT)
    default = "/api/v1/tickets?limit=50"
    filtered = f"/api/v1/tickets?limit=50&status=open&team={sample.open_team}"
    rng = random.Random(7)  # noqa: S311 - made-up data, no secrets

    def gets(n: int) -> list[Request]:
        numbers = sample.visible_numbers
        return [
            request("GET", f"/api/v1/tickets/{rng.choice(numbers)}", host=HOST, headers=agent)
            for _ in range(min(n, 2000))
        ]

    text = TextMaker(random.Random(11))  # noqa: S311 - made-up data, no secrets

    def creates(n: int) -> list[Request]:
        out = []
        for i in range(n):
            body = {
                "subject": text.subject(),
                "body": text.body(text.length(500)),
                "requester": {"email": f"bench.api.{i % 500}@example.com", "name": "API Bench"},
                "team_id": sample.open_team,
                "tags": ["api"],
            }
            out.append(
                request(
                    "POST",
                    "/api/v1/tickets",
                    host=HOST,
                    headers={**agent, "Content-Type": "application/json"},
                    body=json.dumps(body).encode(),
                )
            )
        return out

    def replies(n: int) -> list[Request]:
        out = []
        for i in range(n):
            body = {"kind": "reply", "body": text.body(text.length(450))}
            number = sample.next_number + i
            out.append(
                request(
                    "POST",
                    f"/api/v1/tickets/{number}/messages",
                    host=HOST,
                    headers={**agent, "Content-Type": "application/json"},
                    body=json.dumps(body).encode(),
                )
            )
        return out

    scenarios = [
        Scenario("api_list", "API list, 50 newest (admin)", "json", _get(default, admin)),
        Scenario("api_list_agent", "API list, 50 newest (agent)", "json", _get(default, agent)),
        Scenario(
            "api_list_filtered",
            "API list, open tickets of a team (admin)",
            "json",
            _get(filtered, admin),
        ),
        Scenario(
            "api_list_filtered_agent",
            "API list, open tickets of a team (agent)",
            "json",
            _get(filtered, agent),
        ),
        Scenario(
            "api_list_deep",
            "API list, a page halfway down (agent)",
            "json",
            _get(f"{default}&cursor={sample.deep_cursor}", agent),
        ),
        Scenario("api_get", "API ticket get (agent)", "json", gets),
        Scenario(
            "api_create",
            "API create ticket (agent)",
            "json",
            creates,
            check=expect_status(201),
            requests=300,
            writes=True,
        ),
        Scenario(
            "api_reply",
            "API reply on it (agent)",
            "json",
            replies,
            check=expect_status(201),
            requests=300,
            writes=True,
        ),
    ]
    search = Scenario(
        "api_search",
        f"API full-text search '{sample.search_term}' (agent)",
        "json",
        _get(f"{search_path}{sample.search_term}", agent) if search_path else _get("/", agent),
        missing=None if search_path else "not built yet",
    )
    scenarios.append(search)
    return scenarios


def web_scenarios(sample: Sample, *, routes: set[str]) -> list[Scenario]:
    agent, admin = _cookie(people.AGENT), _cookie(people.ADMIN)
    has_queue = "/queue/{key}" in routes and "/queue/team/{team_id}" in routes
    has_ticket = "/tickets/{number}" in routes
    queue_missing = None if has_queue else "not built yet"
    team = sample.open_team
    out = [
        Scenario(
            "web_queue_mine",
            "Queue page, My tickets (agent, default view)",
            "table",
            _get("/queue/mine", agent),
            missing=queue_missing,
        ),
        Scenario(
            "web_queue_team",
            "Queue page, a team's active tickets (agent)",
            "table",
            _get(f"/queue/team/{team}", agent),
            missing=queue_missing,
        ),
        Scenario(
            "web_queue_filtered",
            "Queue page, a team's open high-priority tickets (agent)",
            "table",
            _get(f"/queue/team/{team}?status=open&priority=high", agent),
            missing=queue_missing,
        ),
        Scenario(
            "web_queue_all",
            "Queue page, All tickets (admin)",
            "table",
            _get("/queue/all", admin),
            missing=queue_missing,
        ),
    ]
    long_ticket = sample.long_ticket
    out.append(
        Scenario(
            "web_ticket",
            f"Ticket page, a {'long ' if long_ticket else ''}thread (agent)",
            "table",
            _get(f"/tickets/{long_ticket}", agent),
            missing=None
            if has_ticket and long_ticket
            else ("not built yet" if not has_ticket else "no long ticket in the data set"),
        )
    )
    return out


def deep_cursor(updated_at_iso: str, ticket_id: int) -> str:
    return encode_cursor("tickets", "-updated_at", updated_at_iso, ticket_id)
