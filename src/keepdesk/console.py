"""What every CLI command shares: running a coroutine, and turning any failure into one line.

A sysadmin sees `error: <what is wrong and what to do>` and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from keepdesk.config import Settings, load_settings, unknown_environment
from keepdesk.errors import ConfigError, KeepdeskError

T = TypeVar("T")
log = logging.getLogger("keepdesk.cli")


@dataclass
class CliContext:
    config_path: Path | None

    def settings(self, **overrides: object) -> Settings:
        try:
            settings = load_settings(self.config_path, **overrides)
        except ConfigError as exc:
            fail(str(exc), 2)
        for name in unknown_environment():
            typer.echo(f"warning: {name} is not a keepdesk setting and is ignored", err=True)
        return settings


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliContext) else CliContext(config_path=None)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    typer.echo(message)


def _describe_db_error(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)).lower()
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return "the database has no keepdesk tables yet: run 'keepdesk upgrade' first"
    if "unable to open database" in text:
        return "cannot open the SQLite database file: check data_dir and its permissions"
    return f"the database failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"


def _server_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it comes with uvicorn[standard]). uvicorn
    picks it only when it starts the loop itself; `serve` starts its own, so it asks here."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Callable[[], Awaitable[T]], *, server: bool = False) -> T:
    """Run a command's coroutine and report any failure as one readable line. A long-running
    `server` (serve, worker) gets the faster event loop."""
    try:
        with asyncio.Runner(loop_factory=_server_loop() if server else None) as runner:
            return runner.run(main())  # type: ignore[arg-type]
    except typer.Exit:
        raise
    except ConfigError as exc:
        fail(str(exc), 2)
    except KeepdeskError as exc:
        fail(exc.message)
    except (OperationalError, ProgrammingError, DBAPIError) as exc:
        fail(_describe_db_error(exc))
    except BrokenPipeError:
        # `keepdesk check | head -1`: the reader left; nothing is wrong.
        sys.stderr.close()
        raise typer.Exit(0) from None
    except ConnectionRefusedError:
        fail("cannot reach the database server (connection refused): is it running?")
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def read_password(*, from_stdin: bool, confirm: bool = True) -> str | None:
    """A password from standard input (scripts) or a hidden prompt (people); None if neither."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n") or None
    if not sys.stdin.isatty():
        return None
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return password


class Progress:
    """A one-line progress counter on a terminal; silent in cron and pipes."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._last = -1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._last >= 0:
            sys.stderr.write("\n")

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        percent = done * 100 // total if total else 100
        if percent != self._last or done == total:
            self._last = percent
            sys.stderr.write(f"\r{done}/{total} ({percent}%)")
            sys.stderr.flush()
