"""Types every REST module shares: the error body, bounded texts, ids in paths, list pages."""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_ID = 2_147_483_647


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and no person types one: refuse it up front.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every string a client sends; give it a Field(max_length=...) where it is used.
Text = Annotated[str, AfterValidator(_no_nul)]


IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Numeric id.")]
NumberPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Ticket number, as in #1042.")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=500, description="Opaque cursor from the previous page's `next_cursor`."),
]


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. `not_found`.")
    message: str = Field(description="What went wrong, for people.")
    details: dict[str, Any] | None = Field(
        None, description="Extra facts: the failing fields, the current version, etc."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class ListPage(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def page_response(items_json: bytes, next_cursor: str | None) -> Response:
    """A `ListPage` whose items the route serialized itself (a JSON array), sent as is.

    Returned as a model, FastAPI would dump the page to a dict, validate that against the
    route's response model and serialize the result: three passes over every item of a list
    the route has just read as typed rows. Routes that return this declare `response_model`
    so the OpenAPI document still describes the page, and a test checks that what they send
    validates against it."""
    cursor = json.dumps(next_cursor).encode()
    return Response(
        b'{"items":' + items_json + b',"next_cursor":' + cursor + b"}",
        media_type="application/json",
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing or invalid bearer token (`unauthenticated`, `invalid_token`).",
        403: "Signed in, but this needs an administrator (`admin_only`).",
        404: "It does not exist, or you may not see it (`not_found`).",
        409: "Version conflict or a state that forbids the change (`version_conflict`, "
        "`invalid_transition`, `ticket_closed`, `email_taken`).",
        422: "The request's values are not acceptable (`invalid_input` and more specific codes).",
        429: "Too many attempts (`rate_limited`); see `Retry-After`.",
        503: "The database is unavailable (`unavailable`).",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}
