"""Bad input is answered with a 4xx JSON error that says what is wrong: never a 500, never a
half-made ticket."""

from __future__ import annotations

import functools
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.tickets.conftest import assert_error, count_rows, error_of, get_ticket

GOOD: dict[str, Any] = {
    "subject": "Printer on fire",
    "body": "It started smoking.",
    "requester": {"email": "carol@customer.test"},
}
NUL = "a\x00b"
BOBS_ID = "(bob's id, filled in by the test)"


def with_(**fields: Any) -> dict[str, Any]:
    return GOOD | fields


# (what is wrong, JSON body or raw bytes, status, error code)
BAD_TICKETS: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"subject": "x",', 422, "invalid_input"),
    ("not JSON at all", b"subject=x", 422, "invalid_input"),
    ("a list, not an object", [GOOD], 422, "invalid_input"),
    (
        "a lone surrogate",
        b'{"subject": "\\ud800", "body": "x", "requester": {"email": "a@b.c"}}',
        422,
        "invalid_input",
    ),
    ("no requester", {"subject": "x", "body": "y"}, 422, "invalid_input"),
    ("subject is a number", with_(subject=42), 422, "invalid_input"),
    ("subject is null", with_(subject=None), 422, "invalid_input"),
    ("tags is a string", with_(tags="vip"), 422, "invalid_input"),
    ("requester is a string", with_(requester="carol@customer.test"), 422, "invalid_input"),
    ("an unknown field", with_(status="open"), 422, "invalid_input"),
    (
        "an unknown requester field",
        with_(requester={"email": "a@b.cd", "phone": "1"}),
        422,
        "invalid_input",
    ),
    ("subject too long", with_(subject="x" * 999), 422, "invalid_input"),
    ("body too long", with_(body="x" * 500_001), 422, "invalid_input"),
    ("subject only blanks", with_(subject="   "), 422, "empty_subject"),
    ("body empty", with_(body=""), 422, "empty_message"),
    ("body only blanks", with_(body=" \n\t "), 422, "empty_message"),
    ("NUL in subject", with_(subject=NUL), 422, "invalid_input"),
    ("NUL in body", with_(body=NUL), 422, "invalid_input"),
    ("NUL in body_html", with_(body_html=NUL), 422, "invalid_input"),
    (
        "NUL in requester name",
        with_(requester={"email": "a@b.cd", "name": NUL}),
        422,
        "invalid_input",
    ),
    ("NUL in a tag", with_(tags=[NUL]), 422, "invalid_input"),
    (
        "NUL in a file name",
        with_(attachments=[{"filename": NUL, "content_base64": ""}]),
        422,
        "invalid_input",
    ),
    ("a bad email", with_(requester={"email": "carol at customer"}), 422, "invalid_email"),
    ("two emails in one", with_(requester={"email": "a@b.cd,c@d.ef"}), 422, "invalid_email"),
    ("an unknown priority", with_(priority="asap"), 422, "invalid_input"),
    ("channel email is the mail channel's", with_(channel="email"), 422, "invalid_input"),
    ("an invalid tag", with_(tags=["what?"]), 422, "invalid_tag"),
    ("a tag starting with a dash", with_(tags=["-vip"]), 422, "invalid_tag"),
    ("a blank tag", with_(tags=["  "]), 422, "invalid_tag"),
    ("a tag too long", with_(tags=["x" * 61]), 422, "invalid_input"),
    ("too many tags", with_(tags=[f"t{i}" for i in range(21)]), 422, "invalid_input"),
    ("team 0", with_(team_id=0), 422, "invalid_input"),
    ("team as text", with_(team_id="support"), 422, "invalid_input"),
    ("a team id too large for the database", with_(team_id=2**63), 422, "invalid_input"),
    ("a float team id", with_(team_id=1.5), 422, "invalid_input"),
    ("an unknown team", with_(team_id=99_999), 422, "unknown_team"),
]

BAD_CHANGES: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"status": ', 422, "invalid_input"),
    ("a list", [{"status": "open"}], 422, "invalid_input"),
    ("an unknown status", {"status": "reopened"}, 422, "invalid_input"),
    ("status in capitals", {"status": "OPEN"}, 422, "invalid_input"),
    ("an unknown priority", {"priority": "asap"}, 422, "invalid_input"),
    ("a subject, which cannot change", {"subject": "new"}, 422, "invalid_input"),
    ("an assignee who is not in the team", {"assignee_id": BOBS_ID}, 422, "not_team_member"),
    ("an agent that does not exist", {"assignee_id": 99_999}, 422, "unknown_agent"),
    ("an assignee id too large", {"assignee_id": 2**63}, 422, "invalid_input"),
    ("an assignee id of 0", {"assignee_id": 0}, 422, "invalid_input"),
    ("an assignee as a list", {"assignee_id": [1]}, 422, "invalid_input"),
    ("a team id too large", {"team_id": 2**63}, 422, "invalid_input"),
    ("an unknown team", {"team_id": 99_999}, 422, "unknown_team"),
    ("tags not a list", {"tags": "vip"}, 422, "invalid_input"),
    ("a NUL in a tag", {"tags": [NUL]}, 422, "invalid_input"),
    ("an invalid tag", {"tags": ["a b?"]}, 422, "invalid_tag"),
    ("too many tags", {"tags": [f"t{i}" for i in range(21)]}, 422, "invalid_input"),
    ("version 0", {"version": 0, "priority": "high"}, 422, "invalid_input"),
    ("version as a word", {"version": "one"}, 422, "invalid_input"),
    ("a version that never was", {"version": 2**63, "priority": "high"}, 409, "version_conflict"),
]

BAD_MESSAGES: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"kind": "note"', 422, "invalid_input"),
    ("no kind", {"body": "x"}, 422, "invalid_input"),
    ("kind customer is the channels'", {"kind": "customer", "body": "x"}, 422, "invalid_input"),
    ("kind system is keepdesk's", {"kind": "system", "body": "x"}, 422, "invalid_input"),
    ("an empty body", {"kind": "reply", "body": ""}, 422, "empty_message"),
    ("a body of blanks", {"kind": "note", "body": "  \n "}, 422, "empty_message"),
    ("a body too long", {"kind": "note", "body": "x" * 500_001}, 422, "invalid_input"),
    ("NUL in the body", {"kind": "note", "body": NUL}, 422, "invalid_input"),
    ("body is a number", {"kind": "note", "body": 7}, 422, "invalid_input"),
    ("an unknown field", {"kind": "note", "body": "x", "is_internal": True}, 422, "invalid_input"),
    (
        "too many attachments",
        {
            "kind": "note",
            "body": "x",
            "attachments": [{"filename": "a", "content_base64": ""}] * 21,
        },
        422,
        "invalid_input",
    ),
]


async def send(client: httpx.AsyncClient, method: str, url: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return await client.request(method, url, content=body, headers=headers)
    return await client.request(method, url, json=body)


async def test_bad_new_tickets_are_refused_and_leave_nothing_behind(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    for what, body, status, code in BAD_TICKETS:
        response = await send(dave, "POST", "/api/v1/tickets", body)
        assert response.status_code == status, (what, response.text)
        assert error_of(response)["code"] == code, (what, response.text)
    assert await count_rows(runtime) == (0, 0)
    # The counter did not move either: the first ticket that gets through is still #1000.
    assert (await open_ticket(dave))["number"] == 1000


async def test_bad_changes_are_refused_and_change_nothing(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    for what, body, status, code in BAD_CHANGES:
        if isinstance(body, dict) and body.get("assignee_id") == BOBS_ID:
            body = {"assignee_id": world.ids["bob"]}
        response = await send(dave, "PATCH", f"/api/v1/tickets/{number}", body)
        assert response.status_code == status, (what, response.text)
        assert error_of(response)["code"] == code, (what, response.text)
    ticket = await get_ticket(dave, number)
    assert (ticket["version"], ticket["status"], ticket["assignee"]) == (1, "new", None)
    # An empty change is no change.
    nothing = await dave.patch(f"/api/v1/tickets/{number}", json={})
    assert nothing.status_code == 200
    assert nothing.json()["version"] == 1


async def test_bad_messages_are_refused(world: World, runtime: Runtime) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    for what, body, status, code in BAD_MESSAGES:
        response = await send(dave, "POST", f"/api/v1/tickets/{number}/messages", body)
        assert response.status_code == status, (what, response.text)
        assert error_of(response)["code"] == code, (what, response.text)
    assert await count_rows(runtime) == (1, 1)
    assert (await get_ticket(dave, number))["version"] == 1


async def test_numbers_and_ids_that_cannot_be_are_refused(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    for path in ("", "/messages", "/events", "/attachments/1"):
        assert_error(await dave.get(f"/api/v1/tickets/99999{path}"), 404, "not_found")
        for wrong in (2**63, 2**31, 0, -1, "abc", "1.5", "1e3"):
            response = await dave.get(f"/api/v1/tickets/{wrong}{path}")
            assert_error(response, 422, "invalid_input")
    for wrong in (2**63, 0, "abc"):
        response = await dave.get(f"/api/v1/tickets/{number}/attachments/{wrong}")
        assert_error(response, 422, "invalid_input")
    assert_error(await dave.get(f"/api/v1/tickets/{number}/attachments/1"), 404, "not_found")
    assert_error(await dave.delete(f"/api/v1/tickets/{number}"), 405, "method_not_allowed")
    for params, code in (
        ({"assignee": "9999999999"}, "bad_filter"),
        ({"assignee": "²"}, "bad_filter"),
        ({"requester": "9999999999"}, "bad_filter"),
        ({"requester": "¹²"}, "bad_filter"),
        ({"team": 2**63}, "invalid_input"),
        ({"tag": NUL}, "invalid_input"),
        ({"requester": f"carol{NUL}@customer.test"}, "invalid_input"),
        ({"tag": "x" * 61}, "invalid_input"),
    ):
        response = await dave.get("/api/v1/tickets", params=params)
        assert response.status_code == 422, (params, response.text)
        assert error_of(response)["code"] == code, params
    assert_error(await dave.get("/api/v1/tags", params={"prefix": NUL}), 422, "invalid_input")


# --- random input -------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_TEXTISH = st.text(max_size=40) | st.sampled_from(["", " ", "\x00", "a" * 1001]) | _JSON
_ATTACHMENT = st.fixed_dictionaries(
    {
        "filename": st.text(max_size=20) | _TEXTISH,
        "content_base64": st.just("aGVsbG8=")
        | st.sampled_from(["", "aGVsbG8", "not base64!"])
        | _JSON,
    },
    optional={"content_type": _TEXTISH | st.sampled_from(["text/html", "image/svg+xml"])},
)
# A good request with one to a few fields replaced, so that many get past validation and reach
# the service; and now and then a value that is not an object at all.
_NEW_TICKET = st.builds(
    lambda fields: GOOD | fields,
    st.fixed_dictionaries(
        {},
        optional={
            "subject": _TEXTISH,
            "body": _TEXTISH,
            "body_html": _TEXTISH | st.just("<img src=x onerror=alert(1)>"),
            "requester": st.fixed_dictionaries(
                {"email": st.sampled_from(["zoe@example.org", "Carol@Customer.Test"]) | _TEXTISH},
                optional={"name": _TEXTISH},
            )
            | _JSON,
            "priority": st.sampled_from(["low", "normal", "high", "urgent", "URGENT"]) | _JSON,
            "channel": st.sampled_from(["api", "web", "chat", "email"]) | _JSON,
            "team_id": st.sampled_from([1, 2, 3, 0, 2**31, 2**63]) | _JSON,
            "tags": st.lists(st.text(max_size=12), max_size=22) | _JSON,
            "attachments": st.lists(_ATTACHMENT, max_size=2) | _JSON,
        },
    ),
)
_CHANGE = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["new", "open", "pending", "resolved", "closed", "x"]) | _JSON,
        "priority": st.sampled_from(["low", "urgent", "x"]) | _JSON,
        "assignee_id": st.sampled_from([None, 1, 2, 3, 0, 2**31, 2**63]) | _JSON,
        "team_id": st.sampled_from([None, 1, 2, 99, 2**63]) | _JSON,
        "tags": st.lists(st.text(max_size=12), max_size=22) | _JSON,
        "version": st.integers(min_value=-1, max_value=2**64) | _JSON,
    },
)


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` values drawn from `strategy`, the same ones on every run."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


_SOME_TICKETS = st.one_of(_NEW_TICKET, _NEW_TICKET, _NEW_TICKET, _JSON)
_SOME_CHANGES = st.one_of(_CHANGE, _CHANGE, _CHANGE, _JSON)


@functools.cache
def new_tickets() -> list[Any]:
    return examples(_SOME_TICKETS, 50)


@functools.cache
def changes() -> list[Any]:
    return examples(_SOME_CHANGES, 50)


def test_the_random_payloads_are_varied() -> None:
    tickets, patches = new_tickets(), changes()
    assert len(tickets) == len(patches) == 50
    assert sum(not isinstance(p, dict) for p in tickets) >= 3
    assert sum(isinstance(p, dict) and p.keys() != GOOD.keys() for p in tickets) >= 10
    assert sum(isinstance(p, dict) and "status" in p for p in patches) >= 10


async def test_random_json_never_breaks_the_ticket_api(world: World) -> None:
    dave, alice = world.client("dave"), world.client("alice")
    number = (await open_ticket(dave))["number"]
    answered: set[int] = set()
    for payload in new_tickets():
        response = await alice.post("/api/v1/tickets", json=payload)
        answered.add(response.status_code)
        assert response.status_code in (201, 404, 422), (payload, response.text)
        if response.status_code != 201:
            error_of(response)
    for payload in changes():
        response = await alice.patch(f"/api/v1/tickets/{number}", json=payload)
        answered.add(response.status_code)
        assert response.status_code in (200, 404, 409, 422), (payload, response.text)
        if response.status_code != 200:
            error_of(response)
    # Some got through to the service, some were refused.
    assert {201, 200, 422} <= answered, answered
