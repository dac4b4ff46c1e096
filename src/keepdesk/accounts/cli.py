"""`keepdesk user …`, `keepdesk token …` and `keepdesk team …`: accounts from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.console import cli_context, fail, read_password, run, say
from keepdesk.runtime import Runtime

user_app = typer.Typer(help="Create and manage agent accounts.", no_args_is_help=True)
token_app = typer.Typer(help="Create API tokens for the REST API.", no_args_is_help=True)
team_app = typer.Typer(
    help="Create teams (members are managed through the API and the web UI).",
    no_args_is_help=True,
)


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The agent's sign-in address.")],
    name: Annotated[str, typer.Option("--name", help="Full name, as customers will see it.")],
    role: Annotated[AgentRole, typer.Option("--role", help="admin or agent.")] = AgentRole.agent,
    team: Annotated[
        list[str] | None, typer.Option("--team", help="Team name; repeat for several.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an agent. Without --password-stdin you are asked for the password on a terminal.

    Example: keepdesk user create ada@example.org --name "Ada Lovelace" --role admin
    """
    settings = cli_context(ctx).settings()
    password = read_password(from_stdin=password_stdin)

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            team_ids = []
            for team_name in team or []:
                found = await accounts.find_team_by_name(session, team_name)
                if found is None:
                    fail(
                        f"no team named {team_name!r}: create it with "
                        f'keepdesk team create "{team_name}"'
                    )
                team_ids.append(found.id)
            agent = await accounts.create_agent(
                session,
                by=COMMAND_LINE,
                email=email,
                name=name,
                role=role,
                password=password,
                team_ids=team_ids,
                now=runtime.clock.now(),
            )
            await session.commit()
            say(f"created {role.value} {agent.email} (id {agent.id})")
            if password is None:
                say(
                    "no password set: this agent can use API tokens "
                    f"('keepdesk token create {agent.email}') but cannot sign in yet"
                )

    run(main)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List every agent with role, status and teams."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session() as session,
        ):
            teams = {t.id: t.name for t in await accounts.list_teams(session)}
            cursor = None
            while True:
                page = await accounts.list_agents(session, cursor=cursor, limit=500)
                memberships = await accounts.team_ids_of(session, [a.id for a in page.items])
                for agent in page.items:
                    state = "active" if agent.is_active else "inactive"
                    names = ", ".join(teams[t] for t in memberships[agent.id]) or "-"
                    say(
                        f"{agent.id:>5}  {agent.email:<40} {agent.role.value:<6} {state:<8} {names}"
                    )
                if not (cursor := page.next_cursor):
                    break

    run(main)


@user_app.command("set-password")
def user_set_password(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The agent's sign-in address.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set an agent's password; every browser session of that agent is signed out."""
    settings = cli_context(ctx).settings()
    password = read_password(from_stdin=password_stdin)
    if password is None:
        fail("no password given: pipe it with --password-stdin or run on a terminal")

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            agent = await accounts.find_agent_by_email(session, email)
            if agent is None:
                fail(f"no agent with the address {email}")
            await accounts.set_password(
                session,
                by=COMMAND_LINE,
                agent_id=agent.id,
                password=password,
                now=runtime.clock.now(),
            )
            await session.commit()
            say(f"password set for {agent.email}")

    run(main)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The agent the token acts as.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "command line",
) -> None:
    """Create an API token for an agent and print it. It is shown only this once.

    Use it as: curl -H "Authorization: Bearer <token>" http://127.0.0.1:8000/api/v1/tickets
    """
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            agent = await accounts.find_agent_by_email(session, email)
            if agent is None or not agent.is_active:
                fail(
                    f"no active agent with the address {email}: create one with "
                    f"'keepdesk user create {email} --name NAME'"
                )
            _, raw = await auth.create_api_token(
                session,
                by=COMMAND_LINE,
                agent_id=agent.id,
                name=name,
                now=runtime.clock.now(),
            )
            await session.commit()
            say(raw)

    run(main)


@team_app.command("create")
def team_create(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The team's name.")]
) -> None:
    """Create a team. Tickets belong to one team; agents see their teams' tickets."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            team = await accounts.create_team(
                session, actor=None, name=name, now=runtime.clock.now()
            )
            await session.commit()
            say(f"created team {team.name!r} (id {team.id})")

    run(main)
