"""`keepdesk mailbox …` and `keepdesk mail …`: mailboxes, fetching, quarantine, explain."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from keepdesk import leases
from keepdesk.accounts import service as accounts
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.console import Progress, cli_context, fail, run, say
from keepdesk.mail import explain as explaining
from keepdesk.mail import importer, mailboxes
from keepdesk.mail import quarantine as quarantine_service
from keepdesk.mail.fetcher import fetch_under_lease
from keepdesk.mail.models import ProcessedAction, QuarantineStatus
from keepdesk.runtime import Runtime

# Held while one pass runs; released at the end so the worker can take the mailbox back.
FETCH_ONCE_LEASE = timedelta(minutes=10)

mailbox_app = typer.Typer(help="Add and list the mailboxes keepdesk fetches.", no_args_is_help=True)
mail_app = typer.Typer(
    help="Fetch mail, explain a mail, handle quarantined mail.", no_args_is_help=True
)
quarantine_app = typer.Typer(
    help="Mail that could not be processed: list, look, retry, drop.", no_args_is_help=True
)
mail_app.add_typer(quarantine_app, name="quarantine")
import_app = typer.Typer(
    help="Bring an old shared inbox in as threaded tickets.", no_args_is_help=True
)


@mailbox_app.command("add")
def mailbox_add(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="The support address, e.g. support@example.com.")],
    imap: Annotated[
        str,
        typer.Option(
            "--imap",
            help="imaps://user:pass@host:993/INBOX (or imap+starttls://, or imap:// on loopback).",
        ),
    ],
    smtp: Annotated[
        str,
        typer.Option(
            "--smtp",
            help="smtps://user:pass@host:465 (or smtp+starttls://…:587, or smtp:// on loopback).",
        ),
    ],
    team: Annotated[str | None, typer.Option("--team", help="Team new tickets go to.")] = None,
    name: Annotated[str, typer.Option("--name", help="Display name in From.")] = "",
    processed: Annotated[
        ProcessedAction,
        typer.Option("--processed", help="What happens to fetched mail on the server."),
    ] = ProcessedAction.move,
    folder: Annotated[
        str, typer.Option("--folder", help="Folder processed mail moves to.")
    ] = "keepdesk/processed",
    auto_ack: Annotated[
        bool,
        typer.Option(
            "--auto-ack", help="Acknowledge new requests by mail (at most once a day per sender)."
        ),
    ] = False,
    allow_plaintext: Annotated[
        bool,
        typer.Option(
            "--allow-plaintext", help="Allow imap:// and smtp:// without TLS off loopback."
        ),
    ] = False,
) -> None:
    """Add a mailbox. The passwords in the URLs are stored encrypted.

    Tip: URL-encode special characters in passwords (@ as %40, : as %3A).
    """
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            team_id = None
            if team is not None:
                found = await accounts.find_team_by_name(session, team)
                if found is None:
                    fail(f"no team named {team!r}: create it with 'keepdesk team create'")
                team_id = found.id
            box = await mailboxes.add_mailbox(
                session,
                by=COMMAND_LINE,
                address=address,
                imap_url=imap,
                smtp_url=smtp,
                secret=runtime.secret,
                now=runtime.clock.now(),
                team_id=team_id,
                display_name=name,
                processed_action=processed,
                processed_folder=folder,
                allow_plaintext=allow_plaintext,
                auto_ack=auto_ack,
            )
            await session.commit()
            say(
                f"added mailbox {box.address} (id {box.id}); "
                f"IMAP {mailboxes.imap_server(box, runtime.secret).masked()}"
            )

    run(main)


@mailbox_app.command("list")
def mailbox_list(ctx: typer.Context) -> None:
    """List mailboxes with their last fetch, errors and alerts."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime, runtime.db.session() as session:
            for box in await mailboxes.list_mailboxes(session):
                state = "active" if box.is_active else "inactive"
                last = f"{box.last_success_at:%Y-%m-%d %H:%M}" if box.last_success_at else "never"
                say(
                    f"{box.id:>4}  {box.address:<32} {state:<8} last fetch {last}  "
                    f"fetched {box.fetched_count}  quarantined {box.quarantined_count}"
                )
                if box.last_error:
                    say(f"      last error: {box.last_error}")
                if box.alert:
                    say(f"      alert: {box.alert}")

    run(main)


@mail_app.command("fetch-once")
def fetch_once_command(
    ctx: typer.Context,
    mailbox: Annotated[
        str | None,
        typer.Option("--mailbox", help="Only this address (default: every active mailbox)."),
    ] = None,
) -> None:
    """Fetch every active mailbox once and exit (for cron and tests). Exit 1 on any error."""
    settings = cli_context(ctx).settings()
    errors = 0

    async def main() -> None:
        nonlocal errors
        async with Runtime.from_settings(settings) as runtime:
            async with runtime.db.session() as session:
                boxes = await mailboxes.list_mailboxes(session, active_only=True)
            if mailbox is not None:
                boxes = [b for b in boxes if b.address == mailbox.strip().lower()]
                if not boxes:
                    fail(f"no active mailbox {mailbox}")
            holder = leases.holder_name()
            for box in boxes:
                # The same lease the worker takes, so cron beside a worker never doubles.
                report = await fetch_under_lease(
                    runtime, box.id, holder=holder, ttl=FETCH_ONCE_LEASE, release=True
                )
                if report is None:
                    say(f"{box.address}: skipped, another process is fetching it")
                    continue
                say(
                    f"{report.mailbox}: {report.fetched} fetched, {report.ingested} new, "
                    f"{report.duplicates} duplicates, {report.quarantined} quarantined"
                )
                for error in report.errors:
                    errors += 1
                    say(f"{report.mailbox}: error: {error}")

    run(main)
    if errors:
        raise typer.Exit(1)


@mail_app.command("explain")
def explain_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A .eml file.", exists=True, dir_okay=False)],
    mailbox: Annotated[
        str | None,
        typer.Option("--mailbox", help="The mailbox it arrives at (for auto-ack and team)."),
    ] = None,
) -> None:
    """Show how a mail would be parsed and threaded, and what would be sent back, without
    storing anything."""
    settings = cli_context(ctx).settings()
    raw = path.read_bytes()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime, runtime.db.session() as session:
            for line in await explaining.explain(
                session, runtime=runtime, raw=raw, mailbox_address=mailbox
            ):
                say(line)

    run(main)


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Include re-processed and discarded.")
    ] = False,
) -> None:
    """List quarantined mail, newest first."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime, runtime.db.session() as session:
            cursor = None
            while True:
                page = await quarantine_service.list_quarantine(
                    session,
                    actor=None,
                    status=None if all_ else QuarantineStatus.held,
                    cursor=cursor,
                    limit=200,
                )
                for item in page.items:
                    say(
                        f"{item.id:>6}  {item.created_at:%Y-%m-%d %H:%M}  {item.status.value:<11} "
                        f"{item.reason:<20} {item.sender[:40]:<40} {item.subject[:50]}"
                    )
                if not (cursor := page.next_cursor):
                    break

    run(main)


@quarantine_app.command("show")
def quarantine_show(ctx: typer.Context, item_id: int) -> None:
    """Show why a mail was quarantined."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime, runtime.db.session() as session:
            item = await quarantine_service.get_quarantined(session, actor=None, item_id=item_id)
            for label, value in (
                ("id", item.id),
                ("status", item.status.value),
                ("reason", item.reason),
                ("detail", item.detail),
                ("from", item.sender),
                ("subject", item.subject),
                ("size", f"{item.size} bytes"),
                ("mailbox", item.mailbox_id),
                ("imap uid", f"{item.uid} (uidvalidity {item.uidvalidity})"),
                ("received", item.created_at),
            ):
                say(f"{label:>9}: {value}")

    run(main)


@quarantine_app.command("download")
def quarantine_download(
    ctx: typer.Context,
    item_id: int,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write the quarantined mail's raw bytes, exactly as received."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime, runtime.db.session() as session:
            item = await quarantine_service.get_quarantined(session, actor=None, item_id=item_id)
            raw = runtime.blobs.get(item.blob_key)
        if output is None:
            sys.stdout.buffer.write(raw)
        else:
            output.write_bytes(raw)
            say(f"wrote {len(raw)} bytes to {output}")

    run(main)


@quarantine_app.command("reprocess")
def quarantine_reprocess(ctx: typer.Context, item_id: int) -> None:
    """Run a quarantined mail through the pipeline again."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            result = await quarantine_service.reprocess(
                session, actor=None, item_id=item_id, runtime=runtime, now=runtime.clock.now()
            )
            await session.commit()
            where = f" (ticket #{result.ticket_number})" if result.ticket_number else ""
            say(f"{result.outcome.value}{where}: {result.reason}")

    run(main)


@quarantine_app.command("discard")
def quarantine_discard(ctx: typer.Context, item_id: int) -> None:
    """Mark a quarantined mail as dealt with. Its raw bytes are kept."""
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with (
            Runtime.from_settings(settings) as runtime,
            runtime.db.session(write=True) as session,
        ):
            await quarantine_service.discard(
                session, actor=None, item_id=item_id, now=runtime.clock.now()
            )
            await session.commit()
            say(f"discarded quarantined mail {item_id}")

    run(main)


def _import(ctx: typer.Context, kind: str, path: Path, mailbox: str, close_days: int) -> None:
    settings = cli_context(ctx).settings()

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            with Progress(enabled=sys.stderr.isatty()) as progress:
                summary = await importer.import_messages(
                    runtime,
                    kind=kind,
                    path=path,
                    mailbox_address=mailbox,
                    close_older_than=timedelta(days=close_days) if close_days else None,
                    progress=progress.update,
                )
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary.outcomes.items()))
        say(
            f"imported {summary.total} mails from {path}: {parts or 'nothing'}; "
            f"{len(summary.tickets_touched)} tickets, {summary.closed} of them closed as old"
        )

    run(main)


CloseDays = Annotated[
    int,
    typer.Option(
        "--close-older-than", help="Close imported threads quiet for this many days (0: never)."
    ),
]
MailboxOption = Annotated[str, typer.Option("--mailbox", help="The mailbox it belonged to.")]


@import_app.command("mbox")
def import_mbox(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The mbox file.")],
    mailbox: MailboxOption,
    close_older_than: CloseDays = 14,
) -> None:
    """Import an mbox file. Safe to run twice: nothing is imported a second time."""
    _import(ctx, "mbox", path, mailbox, close_older_than)


@import_app.command("maildir")
def import_maildir(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The Maildir folder (with cur/ and new/).")],
    mailbox: MailboxOption,
    close_older_than: CloseDays = 14,
) -> None:
    """Import a Maildir folder. Safe to run twice: nothing is imported a second time."""
    _import(ctx, "maildir", path, mailbox, close_older_than)
