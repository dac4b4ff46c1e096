"""The `keepdesk` command: serve, worker, upgrade, check, and each domain's sub-commands."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy import text

from keepdesk import __version__, schema
from keepdesk.accounts import cli as accounts_cli
from keepdesk.accounts import service as accounts
from keepdesk.backup import cli as backup_cli
from keepdesk.backup import service as backups
from keepdesk.config import LogFormat, Settings
from keepdesk.console import CliContext, cli_context, fail, run, say
from keepdesk.logs import configure_logging
from keepdesk.mail import cli as mail_cli
from keepdesk.mail import parsers
from keepdesk.runtime import Runtime
from keepdesk.workers.runner import run_workers

log = logging.getLogger("keepdesk")

LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="text (for people) or json (one object per line, for log collectors); "
        "overrides the log_format setting.",
    ),
]

app = typer.Typer(
    name="keepdesk",
    help="keepdesk, the self-hosted helpdesk. Settings come from --config (or KEEPDESK_CONFIG), "
    "then KEEPDESK_* environment variables; see config.example.toml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(accounts_cli.user_app, name="user")
app.add_typer(accounts_cli.token_app, name="token")
app.add_typer(accounts_cli.team_app, name="team")
app.add_typer(mail_cli.mailbox_app, name="mailbox")
app.add_typer(mail_cli.mail_app, name="mail")
app.add_typer(mail_cli.import_app, name="import")
app.add_typer(backup_cli.backup_app, name="backup")
app.command("restore")(backup_cli.restore)


def _version(value: bool) -> None:
    if value:
        say(f"keepdesk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="KEEPDESK_CONFIG", help="Path to config.toml.", dir_okay=False
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    ctx.obj = CliContext(config_path=config)


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


async def _prepare_database(runtime: Runtime) -> None:
    """A fresh install gets its schema; an existing database must already be at the head."""
    if await schema.is_empty(runtime.db):
        log.info("new database at %s: creating the schema", _safe_url(runtime.settings))
        try:
            await schema.upgrade_async(runtime.settings.effective_database_url)
        except Exception:
            # serve and worker started together on a fresh database: the other one won.
            if await schema.current_revision(runtime.db) != schema.head_revision():
                raise
        return
    current, head = await schema.current_revision(runtime.db), schema.head_revision()
    if current is not None and not schema.is_known_revision(current):
        fail(schema.newer_schema_message(current))
    if current != head:
        fail(
            f"the database schema is at {current or 'an unknown revision'} but this version of "
            f"keepdesk needs {head}: run 'keepdesk upgrade' first"
        )


async def _log_first_admin_hint(runtime: Runtime) -> None:
    async with runtime.db.session() as session:
        if await accounts.count_admins(session) == 0:
            log.warning(
                "no administrator yet. Create one with: keepdesk user create you@example.org "
                "--name 'Your Name' --role admin"
            )


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: server_host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (default: server_port, 8000).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Serving processes on the one port (default: server_processes, 1); "
            "the number of cores on a busy instance.",
        ),
    ] = None,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Serve HTTP only; run 'keepdesk worker' apart.")
    ] = False,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the web UI, the REST API and (unless --no-workers) the background work.

    With no configuration at all this listens on 127.0.0.1:8000 and keeps its data (SQLite
    database, attachments) in ./keepdesk-data/, creating it on first start.
    """
    settings = cli_context(ctx).settings(
        server_host=host, server_port=port, server_processes=processes, log_format=log_format
    )
    configure_logging(settings.log_level.value, settings.log_format.value)
    # Imported here: the web stack is only needed by this command.
    from keepdesk.processes import supervise, uvicorn_config

    if settings.server_processes > 1:

        async def prepare() -> None:
            async with Runtime.from_settings(settings) as runtime:
                await _prepare_database(runtime)
                await _log_first_admin_hint(runtime)

        run(prepare)
        log.info("database: %s", _safe_url(settings))
        code = supervise(
            settings, processes=settings.server_processes, start_workers=not no_workers
        )
        raise typer.Exit(code)

    from keepdesk.app import create_app

    async def main() -> None:
        web = create_app(settings, start_workers=not no_workers)
        runtime: Runtime = web.state.runtime
        await _prepare_database(runtime)
        await _log_first_admin_hint(runtime)
        log.info(
            "keepdesk %s on http://%s:%d (database: %s)",
            __version__,
            settings.server_host,
            settings.server_port,
            _safe_url(settings),
        )
        await uvicorn.Server(uvicorn_config(web, settings)).serve()

    run(main, server=True)


@app.command()
def worker(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Run only the background work (mail, outbox, housekeeping), without HTTP.

    For set-ups that run 'keepdesk serve --no-workers'. Any number may run: database leases
    keep each task to one process at a time.
    """
    settings = cli_context(ctx).settings(log_format=log_format)
    configure_logging(settings.log_level.value, settings.log_format.value)

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            await _prepare_database(runtime)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_workers(runtime, stop)
            await asyncio.to_thread(parsers.shutdown)
            log.info("background tasks stopped")

    run(main, server=True)


@app.command()
def upgrade(
    ctx: typer.Context,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Skip the safety copy (you took your own).")
    ] = False,
) -> None:
    """Migrate the database to this version's schema, after taking a verified backup of it.

    The backup goes to <data_dir>/backups/pre-upgrade-*.tar. If a migration fails, the database
    stays at the last migration that completed, and the message says how to restore the backup.
    """
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            current, head = await schema.current_revision(runtime.db), schema.head_revision()
            if current is not None and not schema.is_known_revision(current):
                fail(schema.newer_schema_message(current))
            if current == head:
                say(f"the database is up to date (revision {head})")
                return
            copy = None
            # Without a revision there is no keepdesk data to keep (an empty database, or one
            # that holds only other programs' tables), and create_backup would refuse it.
            if current is not None and not no_backup:
                copy = (
                    settings.data_dir
                    / "backups"
                    / (f"pre-upgrade-{current}-{runtime.clock.now():%Y%m%dT%H%M%SZ}.tar")
                )
                await backups.create_backup(
                    db=runtime.db,
                    blobs=runtime.blobs,
                    output=copy,
                    now=runtime.clock.now(),
                    secret_file=settings.data_dir / "secret_key",
                )
                say(f"verified backup taken first: {copy}")
            try:
                await schema.upgrade_async(settings.effective_database_url)
            except Exception as exc:
                restore_hint = (
                    f" If the data looks wrong, restore it: keepdesk restore {copy} --force"
                    if copy
                    else ""
                )
                fail(
                    f"migration failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); each "
                    f"migration runs in a transaction, so the database stays at the last one "
                    f"that completed.{restore_hint}"
                )
            say(f"upgraded the database from {current or 'empty'} to {head}")

    run(main)


@app.command()
def check(ctx: typer.Context) -> None:
    """Check the configuration, the data directory and the database; exit 1 on any problem."""
    settings = cli_context(ctx).settings()
    problems = 0

    def report(ok: bool, what: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        say(f"{'ok  ' if ok else 'FAIL'}  {what}")

    report(True, "configuration is valid")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / ".keepdesk-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
        report(True, f"data directory {settings.data_dir.resolve()} is writable")
    except OSError as exc:
        report(False, f"data directory {settings.data_dir}: {exc.strerror}")

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            try:
                async with runtime.db.session() as session:
                    await session.execute(text("SELECT 1"))
                report(True, f"database {_safe_url(settings)} is reachable")
            except Exception as exc:
                report(
                    False,
                    f"database {_safe_url(settings)}: {type(exc).__name__}: "
                    f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}",
                )
                return
            current, head = await schema.current_revision(runtime.db), schema.head_revision()
            report(
                current == head,
                f"schema revision {current or 'none'} (this version needs "
                f"{head}{'' if current == head else '; run keepdesk upgrade'})",
            )
            if current == head:
                async with runtime.db.session() as session:
                    admins = await accounts.count_admins(session)
                report(
                    admins > 0,
                    f"{admins} administrator(s)"
                    if admins
                    else "no administrator: keepdesk user create EMAIL --name NAME --role admin",
                )

    run(main)
    if problems:
        raise typer.Exit(1)


def main() -> None:
    app()
