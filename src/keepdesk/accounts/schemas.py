"""REST shapes of agents, teams, contacts and API tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keepdesk.accounts.models import AgentRole
from keepdesk.web.schema import ApiModel, Text


class PersonRef(BaseModel):
    id: int
    email: str
    name: str


class TeamRef(BaseModel):
    id: int
    name: str


class AgentRead(BaseModel):
    id: int
    email: str
    name: str
    role: AgentRole = Field(description="`admin` or `agent`.")
    is_active: bool = Field(description="Inactive agents cannot sign in or use tokens.")
    team_ids: list[int] = Field(description="Teams the agent belongs to.")
    created_at: datetime


class AgentCreate(ApiModel):
    email: Text = Field(
        max_length=320, min_length=3, description="Sign-in address; unique, case-insensitive."
    )
    name: Text = Field(max_length=200, min_length=1)
    role: AgentRole = AgentRole.agent
    team_ids: list[int] = Field(default_factory=list, max_length=100)
    password: Text | None = Field(
        None, max_length=200, min_length=10, description="Optional; at least 10 characters."
    )


class AgentUpdate(ApiModel):
    name: Text | None = Field(None, max_length=200, min_length=1)
    role: AgentRole | None = None
    is_active: bool | None = Field(
        None, description="false revokes every session and token of the agent at once."
    )
    team_ids: list[int] | None = Field(None, max_length=100)


class TeamRead(BaseModel):
    id: int
    name: str
    member_ids: list[int]
    created_at: datetime


class TeamCreate(ApiModel):
    name: Text = Field(max_length=100, min_length=1)


class ContactRead(BaseModel):
    id: int
    email: str
    name: str
    organisation: str | None
    created_at: datetime


class ContactCreate(ApiModel):
    email: Text = Field(max_length=320, min_length=3)
    name: Text = Field("", max_length=200)
    organisation: Text | None = Field(None, max_length=200)


class ContactUpdate(ApiModel):
    email: Text | None = Field(None, max_length=320, min_length=3)
    name: Text | None = Field(None, max_length=200)
    organisation: Text | None = Field(None, max_length=200)


class TokenRead(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most every 5 minutes.")
    revoked_at: datetime | None


class TokenCreate(ApiModel):
    name: Text = Field(max_length=100, min_length=1)


class TokenCreated(TokenRead):
    token: str = Field(description="The token itself. Shown only in this response.")
