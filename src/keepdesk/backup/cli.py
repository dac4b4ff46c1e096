"""`keepdesk backup`, `keepdesk backup verify`, `keepdesk backup keygen`, `keepdesk restore`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from keepdesk.backup import crypto
from keepdesk.backup import service as backups
from keepdesk.console import Progress, cli_context, fail, run, say
from keepdesk.runtime import Runtime

backup_app = typer.Typer(
    help="Back up everything (database and attachments) into one verified archive.",
    invoke_without_command=True,
)

PassphraseStdin = Annotated[
    bool,
    typer.Option("--passphrase-stdin", help="Read an encryption passphrase from standard input."),
]


def _passphrase(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if len(line) < 12:
        fail("the passphrase must have at least 12 characters")
    return line


def _private_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        fail(f"cannot read the key file {path}: {exc.strerror}")


@backup_app.callback()
def backup(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Archive to write (default: <data_dir>/backups/keepdesk-<time>.tar).",
        ),
    ] = None,
    passphrase_stdin: PassphraseStdin = False,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Encrypt for this key (from 'keepdesk backup keygen'); only its "
            "private key can restore.",
        ),
    ] = None,
) -> None:
    """Take a consistent backup while keepdesk runs, verify it, and only then report success.

    A failed backup (disk full, database error) exits non-zero and leaves no partial file.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = cli_context(ctx).settings()
    passphrase = _passphrase(passphrase_stdin)

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            now = runtime.clock.now()
            suffix = ".tar.kdenc" if passphrase or public_key else ".tar"
            target = output or settings.data_dir / "backups" / (
                f"keepdesk-{now:%Y%m%dT%H%M%SZ}{suffix}"
            )
            with Progress(enabled=sys.stderr.isatty()) as progress:
                manifest = await backups.create_backup(
                    db=runtime.db,
                    blobs=runtime.blobs,
                    output=target,
                    now=now,
                    secret_file=settings.data_dir / "secret_key",
                    passphrase=passphrase,
                    public_key=public_key,
                    progress=progress.update,
                )
            rows = sum(manifest.counts.values())
            say(
                f"backup verified and written: {target} ({rows} rows, "
                f"{manifest.blob_count} files, schema {manifest.schema_revision})"
            )

    run(main)


@backup_app.command("verify")
def verify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The archive.", exists=True, dir_okay=False)],
    passphrase_stdin: PassphraseStdin = False,
    private_key_file: Annotated[
        Path | None,
        typer.Option(
            "--private-key-file", help="The private key, for archives made with --public-key."
        ),
    ] = None,
) -> None:
    """Check every checksum, then restore the archive into a scratch database and compare."""
    passphrase = _passphrase(passphrase_stdin)
    key = _private_key(private_key_file)

    async def main() -> None:
        report = await backups.verify_by_restoring(path, passphrase=passphrase, private_key=key)
        say(report)

    run(main)


@backup_app.command("keygen")
def keygen(
    private_key_file: Annotated[
        Path, typer.Argument(help="Where to write the private key (keep it off the server).")
    ],
) -> None:
    """Make a key pair for encrypted backups: prints the public key to give to
    'keepdesk backup --public-key'."""
    if private_key_file.exists():
        fail(f"{private_key_file} exists already")
    public, private = crypto.generate_keypair()
    private_key_file.touch(mode=0o600)
    private_key_file.write_text(private + "\n")
    say(public)


def restore(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The archive.", exists=True, dir_okay=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Replace everything in a non-empty instance.")
    ] = False,
    passphrase_stdin: PassphraseStdin = False,
    private_key_file: Annotated[
        Path | None,
        typer.Option(
            "--private-key-file", help="The private key, for archives made with --public-key."
        ),
    ] = None,
) -> None:
    """Restore a backup into this instance (SQLite or PostgreSQL, whichever it was taken on).

    The instance must be empty unless --force. Stop 'keepdesk serve' first.
    """
    settings = cli_context(ctx).settings()
    passphrase = _passphrase(passphrase_stdin)
    key = _private_key(private_key_file)

    async def main() -> None:
        async with Runtime.from_settings(settings) as runtime:
            with Progress(enabled=sys.stderr.isatty()) as progress:
                manifest = await backups.restore_backup(
                    db=runtime.db,
                    blobs=runtime.blobs,
                    archive=path,
                    data_dir=settings.data_dir,
                    force=force,
                    passphrase=passphrase,
                    private_key=key,
                    progress=progress.update,
                )
            say(
                f"restored {sum(manifest.counts.values())} rows and {manifest.blob_count} files "
                f"from a backup of {manifest.created_at} ({manifest.source})"
            )

    run(main)
